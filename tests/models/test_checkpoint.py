"""Checkpoints: safetensors + JSON round trip, pruned widths, and every corruption gives CheckpointError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmdistill.errors import CheckpointError
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import count_parameters, load_model, save_model
from mmdistill.models.multimodal import MultimodalModel

VOCAB = 40


def make_model(**kw: object) -> MultimodalModel:
    torch.manual_seed(0)
    mods = ["image", "text", "audio"]
    spec = model_spec("tiny", modalities=mods, num_classes=3, vocab_size=VOCAB, n_mels=8, **kw)
    return build_model(spec)


def make_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"id": ["a", "b"], "label": torch.tensor([0, 2]), "image": torch.randn(2, 1, 10, 10, generator=g),
            "text": torch.tensor([[5, 6, 7], [8, 0, 0]]), "audio": torch.randn(2, 8, 12, generator=g),
            "lengths": {"text": torch.tensor([3, 1]), "audio": torch.tensor([12, 7])},
            "present": {m: torch.tensor([True, True]) for m in ("image", "text", "audio")}}


def trained(model: MultimodalModel) -> MultimodalModel:
    """Move BatchNorm statistics and weights away from their initial values."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(make_batch()).logits, torch.tensor([0, 2]))
    loss.backward()
    opt.step()
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = trained(make_model(fusion={"name": "attention"}, tasks={"aux": 2}))
    save_model(model, tmp_path / "ckpt", extra={"class_names": ["a", "b", "c"]})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["model.json", "model.safetensors"]
    loaded, extra = load_model(tmp_path / "ckpt")
    assert extra == {"class_names": ["a", "b", "c"]} and not loaded.training
    meta = json.loads((tmp_path / "ckpt" / "model.json").read_text())
    assert meta["spec"] == model.spec and meta["parameters"] == count_parameters(model)
    with torch.no_grad():
        a, b = model(make_batch()), loaded(make_batch())
    assert torch.equal(a.logits, b.logits) and torch.equal(a.task_logits["aux"], b.task_logits["aux"])
    for name, buf in model.state_dict().items():
        assert torch.equal(buf, loaded.state_dict()[name]), name


def test_pruned_widths_in_the_spec_reload(tmp_path: Path) -> None:
    pruned = {"image": {"kwargs": {"channels": [3, 5]}}, "audio": {"kwargs": {"channels": [6, 2]}}}
    model = make_model(encoders=pruned)
    save_model(model, tmp_path)
    loaded, _ = load_model(tmp_path)
    assert loaded.encoders["image"].stages[1][0].out_channels == 5
    assert loaded.encoders["audio"].convs[1][0].out_channels == 2


def test_count_parameters() -> None:
    model = make_model()
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    model.encoders.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == sum(
        p.numel() for p in [*model.fusion.parameters(), *model.head.parameters()]
    )


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"model.json: not found"):
        load_model(tmp_path)
    save_model(make_model(), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model.safetensors: not found"):
        load_model(tmp_path)


def test_bad_json_and_wrong_format(tmp_path: Path) -> None:
    save_model(make_model(), tmp_path)
    (tmp_path / "model.json").write_text('{"format": "mmdistill.checkpoint/1",\n "spec": {', encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"model.json: invalid JSON at line 2"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text('{"format": "something/2"}', encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"format 'something/2'"):
        load_model(tmp_path)


def test_spec_that_does_not_build(tmp_path: Path) -> None:
    save_model(make_model(), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["spec"]["fusion"]["name"] = "concatt"
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"(?s)model.json: the spec does not build.*mean 'concat'"):
        load_model(tmp_path)


def test_spec_weights_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    save_model(make_model(), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["spec"]["encoders"]["image"]["kwargs"]["channels"] = [8, 4]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    expected = r"key 'encoders.image.stages.1.0.weight' has shape \[8, 8, 3, 3\] "
    expected += r"but model.json's spec builds \[4, 8"
    with pytest.raises(CheckpointError, match=expected + r".*re-save both"):
        load_model(tmp_path)


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    save_model(make_model(), tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["extra.weight"] = state.pop("head.fc.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    expected = r"missing key\(s\) \['head.fc.weight'\].*unexpected key\(s\) \['extra.weight'\]"
    with pytest.raises(CheckpointError, match=expected):
        load_model(tmp_path)


def test_corrupt_weights_file(tmp_path: Path) -> None:
    save_model(make_model(), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match=r"model.safetensors: unreadable safetensors file"):
        load_model(tmp_path)


def test_save_errors(tmp_path: Path) -> None:
    model = make_model()
    with pytest.raises(CheckpointError, match="not JSON-serializable"):
        save_model(model, tmp_path, extra={"bad": object()})
    assert not list(tmp_path.iterdir())  # nothing half-written
    model.spec = None
    with pytest.raises(CheckpointError, match="without a spec"):
        save_model(model, tmp_path)


# --- hardening: checksums, pickles, per-tensor spec mismatches ---------------------------------------


class _Trap:
    """Unpickling this object would create ``marker``: the test proves nothing was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_checksum_is_recorded_and_a_changed_weight_is_refused(tmp_path: Path) -> None:
    import hashlib

    save_model(make_model(), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["weights_sha256"] == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    state = load_file(str(tmp_path / "model.safetensors"))
    state["head.fc.bias"] = state["head.fc.bias"] + 1.0  # same keys and shapes: only the checksum sees it
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'model.safetensors'}: sha256 ")
    recorded = meta["weights_sha256"][:16]
    assert f"does not match weights_sha256 {recorded}... recorded in {tmp_path / 'model.json'}" in msg
    assert "re-save the model with save_model" in msg


def test_old_checkpoint_without_checksum_loads_with_a_warning(tmp_path: Path) -> None:
    model = make_model()
    save_model(model, tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    del meta["weights_sha256"]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match=r"model.json: has no weights_sha256 .* re-save it with save_model"):
        loaded, _ = load_model(tmp_path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_pickle_instead_of_safetensors_is_refused_unopened(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "unpickled"
    save_model(make_model(), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    torch.save({"w": _Trap(marker)}, weights, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ckpt")
    kind = "a Python pickle (protocol 2)" if legacy else "a zip archive, as torch.save writes"
    assert str(info.value).startswith(f"{weights}: is {kind}")
    assert "not safetensors; refused. mmdistill never unpickles" in str(info.value)
    assert "torch.load(path, weights_only=True)" in str(info.value)  # the fix
    assert not marker.exists()


def test_a_pt_file_given_as_the_checkpoint_is_refused_with_the_fix(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    pt = tmp_path / "teacher.pt"
    torch.save({"w": _Trap(marker)}, pt)
    with pytest.raises(CheckpointError, match=r"teacher.pt: is a zip archive, as torch.save writes .* not an "
                                              r"mmdistill checkpoint folder .*save_model\(model, folder\)"):
        load_model(pt)
    (tmp_path / "weights.ckpt").write_bytes(b"not even a pickle")
    with pytest.raises(CheckpointError, match=r"weights.ckpt: is a '.ckpt' file, a pickle-based format"):
        load_model(tmp_path / "weights.ckpt")
    assert not marker.exists()
    save_model(make_model(), tmp_path / "ok")
    with pytest.raises(CheckpointError, match=r"model.json: is a file; pass the checkpoint folder .* maybe "):
        load_model(tmp_path / "ok" / "model.json")


def test_every_wrongly_shaped_tensor_is_named(tmp_path: Path) -> None:
    save_model(make_model(), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["spec"]["num_classes"] = 5
    meta["spec"]["encoders"]["image"]["kwargs"]["channels"] = [8, 4]
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    msg = str(info.value)
    assert "key 'encoders.image.stages.1.0.weight' has shape [8, 8, 3, 3] but model.json's spec builds " \
        "[4, 8, 3, 3]" in msg
    assert "key 'head.fc.bias' has shape [3] but model.json's spec builds [5]" in msg
    assert "weights_sha256" not in msg  # the structural diagnosis comes first
