"""Teacher-output cache: exact lookups, key invalidation, reuse, damage detection, no pickle, ranks."""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmdistill.data.collate import collate
from mmdistill.distill import cache as C
from mmdistill.distill.cache import TeacherCache, cache_key, dataset_fingerprint, model_fingerprint
from mmdistill.errors import CheckpointError, ConfigError, DataError
from mmdistill.io_atomic import file_sha256
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.multimodal import MultimodalModel

VOCAB, MELS, CLASSES = 60, 16, 4
FEATURES = ["fused", "audio.pooled"]


def make_samples(n: int = 21, seed: int = 0) -> list[dict[str, Any]]:
    """Samples per the contract in mmdistill.data.batch, with some modalities absent."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        s: dict[str, Any] = {"id": f"s{i:03d}", "label": i % CLASSES}
        if i % 5 != 1:
            s["image"] = torch.randn(1, 12, 12, generator=g)
        if i % 4 != 2:
            s["text"] = torch.randint(1, VOCAB, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g)
        if i % 3 != 0:
            s["audio"] = torch.randn(MELS, int(torch.randint(4, 21, (1,), generator=g)), generator=g)
        out.append(s)
    return out


def make_teacher(seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    spec = model_spec("tiny", modalities=["image", "text", "audio"], num_classes=CLASSES, vocab_size=VOCAB,
                      n_mels=MELS)
    return build_model(spec).eval()


def count_forwards(model: torch.nn.Module) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def reference_outputs(teacher: MultimodalModel, samples: list[dict[str, Any]], batch_size: int) -> dict:
    """id -> {name: row} from running the teacher on the same consecutive batches the cache uses."""
    rows: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            batch = collate(samples[start:start + batch_size])
            out = teacher(batch)
            for j, sid in enumerate(batch["id"]):
                rows[sid] = {"logits": out.logits[j], **{f: out.features[f][j] for f in FEATURES}}
    return rows


def test_lookup_equals_teacher_outputs_in_shuffled_order(tmp_path: Path) -> None:
    teacher, samples = make_teacher(), make_samples()
    cache = TeacherCache.build(tmp_path, teacher, samples, features=FEATURES, batch_size=8, progress=False)
    assert len(cache) == 21 and cache.features == sorted(FEATURES)
    assert cache.dims == {"logits": CLASSES, "fused": 16, "audio.pooled": 16}
    names = sorted(p.name for p in cache.directory.iterdir())
    assert names == ["features-audio.pooled.npy", "features-fused.npy", "ids.json", "logits.npy", "meta.json"]
    assert cache.directory.name == f"teacher-{cache.key[:16]}"
    ref = reference_outputs(teacher, samples, 8)
    ids = [s["id"] for s in samples]
    random.Random(1).shuffle(ids)
    got = cache.lookup(ids[:13])
    assert set(got) == {"logits", *FEATURES}
    for name, t in got.items():
        assert t.dtype == torch.float32 and t.shape[0] == 13
        assert torch.equal(t, torch.stack([ref[i][name] for i in ids[:13]])), name  # bit-exact
    # The rows belong to these ids: the same as running each sample alone (up to float rounding).
    with torch.no_grad():
        alone = teacher(collate([next(s for s in samples if s["id"] == ids[0])]))
    torch.testing.assert_close(got["logits"][0], alone.logits[0], atol=1e-5, rtol=1e-5)
    meta = json.loads((cache.directory / "meta.json").read_text())
    assert meta["key"] == cache.key and meta["rows"] == 21 and meta["dtype"] == "float32"
    assert meta["ingredients"]["teacher"] == model_fingerprint(teacher)
    assert meta["ingredients"]["data"] == dataset_fingerprint(samples)
    assert meta["shapes"]["logits"] == [21, CLASSES] and meta["mmdistill_version"]
    assert set(meta["files"]) == {n for n in names if n != "meta.json"}


def test_identical_rebuild_reuses_and_changes_rebuild(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    teacher, samples = make_teacher(), make_samples()
    calls = count_forwards(teacher)
    first = TeacherCache.get_or_build(tmp_path, teacher, samples, features=FEATURES, batch_size=8,
                                      progress=False)
    assert calls[0] == 3  # 21 samples in batches of 8
    with caplog.at_level(logging.INFO, logger="mmdistill.distill.cache"):
        again = TeacherCache.get_or_build(tmp_path, teacher, samples, features=FEATURES[::-1], batch_size=8,
                                          progress=False)
    assert calls[0] == 3 and again.directory == first.directory  # no recompute, feature order irrelevant
    assert "teacher cache hit" in caplog.text
    # build() with the same ingredients finds the same key, so it opens instead of recomputing.
    assert TeacherCache.build(tmp_path, teacher, samples, features=FEATURES, progress=False).key == first.key
    assert calls[0] == 3

    changed_teacher = make_teacher()  # same weights as teacher, without the counting hook
    with torch.no_grad():
        next(changed_teacher.parameters()).view(-1)[0] += 1e-3
    changed_samples = [dict(s) for s in samples]
    changed_samples[7]["audio"] = changed_samples[7]["audio"].clone()
    changed_samples[7]["audio"][0, 0] += 1e-3
    keys = {first.key}
    for t, d, extra in [(changed_teacher, samples, None), (teacher, changed_samples, None),
                        (teacher, samples, {"image_size": 12})]:
        c = TeacherCache.get_or_build(tmp_path, t, d, features=FEATURES, extra=extra, batch_size=8,
                                      progress=False)
        keys.add(c.key)
    assert len(keys) == 4 and calls[0] == 3 + 2 * 3  # changed_teacher is not counted: 2 counted rebuilds
    assert len(list(tmp_path.glob("teacher-*"))) == 4
    # The rebuilt caches hold the new outputs (not the old ones).
    new = TeacherCache.get_or_build(tmp_path, changed_teacher, samples, features=FEATURES, progress=False)
    assert not torch.equal(new.lookup(["s000"])["logits"], first.lookup(["s000"])["logits"])


def test_the_stage_that_built_a_cache_draws_the_same_random_numbers_when_it_finds_it(tmp_path: Path) -> None:
    """Building draws torch's global RNG (the DataLoader's base seed); the building stage, opening
    its cache later (resume, rerun), replays that draw, any other stage draws nothing, as before."""
    teacher, samples = make_teacher(), make_samples()

    def after(built_by: str | None, root: Path = tmp_path) -> torch.Tensor:
        torch.manual_seed(123)
        TeacherCache.get_or_build(root, teacher, samples, batch_size=8, progress=False, built_by=built_by)
        return torch.rand(3)

    built = after("student-kd")
    assert json.loads(next(tmp_path.glob("teacher-*/meta.json")).read_text())["built_by"] == "student-kd"
    torch.manual_seed(123)
    untouched = torch.rand(3)
    assert not torch.equal(built, untouched)  # the build did draw
    assert torch.equal(after("student-kd"), built)  # found by its builder: the same stream
    assert torch.equal(after("student-robust"), untouched)  # found by another stage: no draw
    assert torch.equal(after(None), untouched)
    torch.manual_seed(7)  # the building stage from another RNG state than its build: nothing replayed
    TeacherCache.get_or_build(tmp_path, teacher, samples, batch_size=8, progress=False, built_by="student-kd")
    other = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(other, torch.rand(3))
    meta_path = next(tmp_path.glob("teacher-*/meta.json"))  # a damaged record: warned, not fatal
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(dict(meta, rng=dict(meta["rng"], after="bm90IGEgc3RhdGU="))))
    assert torch.equal(after("student-kd"), untouched)
    anonymous = after(None, tmp_path / "other")  # built without a name: nothing recorded, no replay
    assert "built_by" not in json.loads(next((tmp_path / "other").glob("teacher-*/meta.json")).read_text())
    assert torch.equal(anonymous, built) and torch.equal(after(None, tmp_path / "other"), untouched)


def test_fingerprints_see_every_ingredient() -> None:
    samples = make_samples(6)
    base = dataset_fingerprint(samples)
    assert dataset_fingerprint(copy.deepcopy(samples)) == base
    variants = []
    for edit in ("label", "id", "drop_text", "text_token", "order"):
        s = copy.deepcopy(samples)
        if edit == "label":
            s[0]["label"] = 3
        elif edit == "id":
            s[0]["id"] = "renamed"
        elif edit == "drop_text":
            del s[0]["text"]
        elif edit == "text_token":
            s[0]["text"][0] = (int(s[0]["text"][0]) % (VOCAB - 1)) + 1
        else:
            s = s[::-1]
        variants.append(dataset_fingerprint(s))
    variants.append(dataset_fingerprint(samples, extra={"normalize": True}))
    assert len({base, *variants}) == 7
    teacher = make_teacher()
    fp = model_fingerprint(teacher)
    assert model_fingerprint(copy.deepcopy(teacher)) == fp and len(fp) == 64
    bn = next(b for n, b in teacher.named_buffers() if "running_mean" in n)
    bn += 1e-4  # BatchNorm statistics change the outputs, so they change the fingerprint
    assert model_fingerprint(teacher) != fp
    assert cache_key(fp, base, ["a", "b"]) == cache_key(fp, base, ["b", "a", "a"])
    assert cache_key(fp, base, ["a"]) != cache_key(fp, base, ["a"], dtype="float16")
    with pytest.raises(ConfigError, match="JSON-serializable"):
        dataset_fingerprint(samples, extra={"fn": print})


@pytest.mark.parametrize("target", ["logits.npy", "features-fused.npy", "ids.json"])
def test_flipped_byte_is_a_clear_checkpoint_error(tmp_path: Path, target: str) -> None:
    teacher, samples = make_teacher(), make_samples(9)
    cache = TeacherCache.build(tmp_path, teacher, samples, features=["fused"], progress=False)
    path = cache.directory / target
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01
    path.write_bytes(bytes(raw))
    pattern = rf"cache .*teacher-{cache.key[:16]} is damaged: {target} does not match its sha256 .*delete it"
    with pytest.raises(CheckpointError, match=pattern):
        TeacherCache.open(tmp_path, cache.key)
    calls = count_forwards(teacher)
    with pytest.raises(CheckpointError, match="is damaged"):  # never silently rebuilt or trusted
        TeacherCache.get_or_build(tmp_path, teacher, samples, features=["fused"], progress=False)
    assert calls[0] == 0


def test_other_damage_is_reported(tmp_path: Path) -> None:
    cache = TeacherCache.build(tmp_path, make_teacher(), make_samples(5), progress=False)
    meta_path = cache.directory / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "key": "0" * 64}))
    with pytest.raises(CheckpointError, match="holds key '0000"):
        TeacherCache.open(tmp_path, cache.key)
    meta["shapes"]["logits"] = [5, 7]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"logits.npy holds float32\[5, 4\], meta.json says float32"):
        TeacherCache.open(tmp_path, cache.key)
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="meta.json is unreadable"):
        TeacherCache.open(tmp_path, cache.key)
    assert TeacherCache.open(tmp_path, "f" * 64) is None  # absent is not an error


PAYLOAD_RAN: list[bool] = []


def _payload() -> None:
    PAYLOAD_RAN.append(True)


class _Evil:
    def __reduce__(self) -> tuple:
        return (_payload, ())


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    cache = TeacherCache.build(tmp_path, make_teacher(), make_samples(5), progress=False)
    path = cache.directory / "logits.npy"
    evil = np.empty((5, CLASSES), dtype=object)
    evil[0, 0] = _Evil()
    np.save(path, evil, allow_pickle=True)
    meta_path = cache.directory / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["logits.npy"]["sha256"] = file_sha256(path)  # a forged but consistent cache
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a plain numeric .npy array"):
        TeacherCache.open(tmp_path, cache.key)
    assert PAYLOAD_RAN == []


def test_arrays_are_memory_mapped_and_loaded_without_pickle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = TeacherCache.build(tmp_path, make_teacher(), make_samples(5), features=["fused"], progress=False)
    seen: list[dict[str, Any]] = []
    real_load = np.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(C.np, "load", spy)
    cache = TeacherCache.open(tmp_path, built.key)
    assert cache is not None and len(seen) == 2
    assert all(k == {"mmap_mode": "r", "allow_pickle": False} for k in seen)
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in cache._arrays.values())
    out = cache.lookup(["s004", "s000"])
    out["logits"] += 1  # lookups are private copies: the memory map is read-only and untouched
    assert not torch.equal(out["logits"], cache.lookup(["s004", "s000"])["logits"])
    desc = cache.describe()
    assert desc["rows"] == 5 and desc["features"] == ["fused"] and desc["key"] == built.key
    assert desc["bytes"] == sum(p.stat().st_size for p in cache.directory.iterdir() if p.name != "meta.json")


def test_unknown_feature_lists_available_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        TeacherCache.build(tmp_path, make_teacher(), make_samples(5), features=["fused", "audio.pool"],
                           progress=False)
    msg = str(info.value)
    assert "['audio.pool']" in msg and "did you mean 'audio.pooled'?" in msg
    assert "available: audio.pooled, fused, image.pooled, text.pooled" in msg
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_unknown_id_names_the_id_and_the_fix(tmp_path: Path) -> None:
    cache = TeacherCache.build(tmp_path, make_teacher(), make_samples(5), progress=False)
    with pytest.raises(DataError, match=r"sample id 'new-7' is not in teacher cache .*rebuild") as info:
        cache.lookup(["s001", "new-7"])
    assert isinstance(info.value, KeyError) and str(info.value).startswith("sample id 'new-7'")


def test_crash_and_leftover_temp_dirs_do_not_break_the_next_build(tmp_path: Path) -> None:
    teacher, samples = make_teacher(), make_samples(12)
    key = cache_key(model_fingerprint(teacher), dataset_fingerprint(samples), [])

    class Boom(RuntimeError):
        pass

    calls = count_forwards(teacher)

    def fail_on_second(*_: Any) -> None:
        if calls[0] == 2:
            raise Boom("power cut")

    handle = teacher.register_forward_hook(fail_on_second)
    with pytest.raises(Boom):
        TeacherCache.build(tmp_path, teacher, samples, batch_size=5, progress=False)
    handle.remove()
    assert list(tmp_path.iterdir()) == [] and TeacherCache.open(tmp_path, key) is None
    # A crashed build of this host (dead pid) is cleaned; another host's (maybe alive) is ignored.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ours = tmp_path / f"{C._TMP_PREFIX}{key[:16]}-{C._host()}-{dead.pid}-deadbeef"
    theirs = tmp_path / f"{C._TMP_PREFIX}{key[:16]}-otherhost-{os.getpid()}-cafef00d"
    for d in (ours, theirs):
        d.mkdir()
        (d / "logits.npy").write_bytes(b"half written")
    cache = TeacherCache.build(tmp_path, teacher, samples, batch_size=5, progress=False)
    assert cache.key == key and len(cache) == 12
    assert not ours.exists() and theirs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([theirs.name, f"teacher-{key[:16]}"])


def test_float16_halves_the_arrays(tmp_path: Path) -> None:
    teacher, samples = make_teacher(), make_samples(9)
    full = TeacherCache.build(tmp_path, teacher, samples, features=["fused"], progress=False)
    half = TeacherCache.build(tmp_path, teacher, samples, features=["fused"], progress=False, dtype="float16")
    assert half.key != full.key and half.meta["dtype"] == "float16"
    assert np.load(half.directory / "logits.npy", mmap_mode="r").dtype == np.float16
    data_bytes = [(c.directory / "features-fused.npy").stat().st_size - 128 for c in (full, half)]
    assert data_bytes == [9 * 16 * 4, 9 * 16 * 2]  # .npy header is 128 bytes
    a, b = full.lookup(full.ids), half.lookup(half.ids)
    for name in a:
        assert b[name].dtype == torch.float32
        torch.testing.assert_close(b[name], a[name], atol=2e-3, rtol=1e-3)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        TeacherCache.build(tmp_path, teacher, samples, progress=False, dtype="bfloat16")


def test_bad_datasets(tmp_path: Path) -> None:
    samples = make_samples(4)
    samples[3]["id"] = "s001"
    with pytest.raises(DataError, match="sample id 's001' appears more than once"):
        TeacherCache.build(tmp_path, make_teacher(), samples, progress=False)
    with pytest.raises(DataError, match="empty dataset"):
        TeacherCache.build(tmp_path, make_teacher(), [], progress=False)
    with pytest.raises(DataError, match=r"'image' must be a tensor, got list"):
        dataset_fingerprint([{"id": "x", "label": 0, "image": [[0.0]]}])


def test_ranks_share_the_cache_built_by_rank_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, samples = make_teacher(), make_samples(6)
    # Rank 1 before rank 0 has built: the broadcast reports success but no files -> clear error.
    monkeypatch.setattr(C.dist_utils, "is_main", lambda: False)
    calls = count_forwards(teacher)
    with pytest.raises(CheckpointError, match="filesystem all ranks see"):
        TeacherCache.get_or_build(tmp_path, teacher, samples, progress=False)
    monkeypatch.setattr(C.dist_utils, "is_main", lambda: True)
    built = TeacherCache.get_or_build(tmp_path, teacher, samples, progress=False)
    # Rank 1 after rank 0 built: opens the same files, never runs the teacher.
    monkeypatch.setattr(C.dist_utils, "is_main", lambda: False)
    assert TeacherCache.get_or_build(tmp_path, teacher, samples, progress=False).directory == built.directory
    assert calls[0] == 1
    # Rank 0's failure reaches the other ranks instead of leaving them waiting.
    monkeypatch.setattr(C.dist_utils, "broadcast_object", lambda obj, src=0: "ConfigError: boom")
    with pytest.raises(CheckpointError, match="rank 0 failed to build the teacher cache: ConfigError: boom"):
        TeacherCache.get_or_build(tmp_path, teacher, samples, progress=False)
    monkeypatch.setattr(C.dist_utils, "all_gather_object", lambda obj: [obj, "f" * 64])
    with pytest.raises(ConfigError, match="ranks computed different teacher-cache keys"):
        TeacherCache.get_or_build(tmp_path, teacher, samples, progress=False)
