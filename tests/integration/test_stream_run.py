"""`data.stream: true`: a run whose train split streams from Parquet shards with bounded memory."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from _helpers import run_cli, run_cli_torchrun, write_manifest
from mmdistill.config import load_config
from mmdistill.data import preprocess as P
from mmdistill.data import shard_stream as SS
from mmdistill.data import shards as S

pytestmark = pytest.mark.slow
pytest.importorskip("pyarrow")
from mmdistill.data.shards_pack import pack_manifest  # noqa: E402
from mmdistill.recipes.pipeline import run_pipeline  # noqa: E402

BUFFER = 3  # shuffle-buffer rows in the instrumented run (the default 256 would hold the whole tiny split)
GROUP = 2  # rows per Parquet row group


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × 9 rows: 21 train (odd: 2 ranks hold 10 and 11), 3 val, 3 test; 4 rows/shard."""
    root = tmp_path_factory.mktemp("stream")
    manifest = write_manifest(root / "ds", classes=("a", "b", "c"), n_per_class=9)
    pack_manifest(manifest, root / "packed", rows_per_shard=4, row_group_rows=GROUP, progress=False)
    return root / "packed"


def _overrides(packed: Path, out: Path, name: str, stream: bool) -> list[str]:
    return [f"data.shards={packed}", "data.source=shards", f"data.stream={str(stream).lower()}",
            "data.limit=null", "data.batch_size=4", "stages=[teacher,student,distill,evaluate]",
            "teacher.train.epochs=3", "student.train.epochs=1", f"output_dir={out}", f"name={name}",
            "logging.quiet=true"]


def test_streamed_run_holds_a_bounded_number_of_train_rows_and_learns(
    tmp_path: Path, packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed run completes (teacher, student, distill kd from a chunked cache, evaluate) while no
    reader ever holds more than ``BUFFER + GROUP`` decoded train rows and the train split is never
    preprocessed as a whole.

    Its numbers cannot equal the in-memory shards run's: the in-memory loader shuffles with a seeded
    permutation of the whole split, the stream with a row-group permutation plus a shuffle buffer, so
    the batches differ. Both runs are checked to be sane instead: the teacher beats chance (1/3) on
    this easy data in both, and both see the same data (sizes, classes, vocabulary).
    """
    monkeypatch.setitem(SS.ShardStream.__init__.__kwdefaults__, "buffer_size", BUFFER)
    peaks: list[int] = []
    real_iter = SS.ShardStream.__iter__

    def tracked(self: SS.ShardStream):  # type: ignore[no-untyped-def]
        yield from real_iter(self)
        peaks.append(self.peak_held if self.shuffle else 1)

    monkeypatch.setattr(SS.ShardStream, "__iter__", tracked)
    batches: dict[str, int] = {}
    real_all = P.Preprocessor.process_all

    def recorded(self: P.Preprocessor, raws, *a, **k):  # type: ignore[no-untyped-def]
        for r in raws:
            batches[r.split] = batches.get(r.split, 0) + 1
        return real_all(self, raws, *a, **k)

    monkeypatch.setattr(P.Preprocessor, "process_all", recorded)
    cfg = load_config("smoke", _overrides(packed, tmp_path, "stream", True))
    run_pipeline(cfg, tmp_path / "stream")

    assert "train" not in batches and batches == {"val": 3, "test": 3}  # train: only streamed
    assert peaks and max(peaks) <= BUFFER + GROUP < 21
    run = tmp_path / "stream"
    (cache,) = (run / "cache").iterdir()
    assert json.loads((cache / "meta.json").read_text())["format"] == "mmdistill-teacher-cache-chunked/1"

    monkeypatch.undo()
    cfg = load_config("smoke", _overrides(packed, tmp_path, "memory", False))
    run_pipeline(cfg, tmp_path / "memory")
    data = {n: json.loads((tmp_path / n / "data.json").read_text()) for n in ("stream", "memory")}
    for key in ("sizes", "classes", "vocab_size"):
        assert data["stream"][key] == data["memory"][key], key
    assert data["stream"]["streamed"] == ["train"] and "streamed" not in data["memory"]
    for n in ("stream", "memory"):
        summary = {r["model"]: r for r in json.loads((tmp_path / n / "eval" / "summary.json").read_text())}
        assert set(summary) == {"teacher", "student-scratch", "student-kd"}, n
        assert summary["teacher"]["accuracy"] > 1 / 3, n  # 3 classes: better than chance


def test_streamed_run_compresses_and_exports_from_the_first_train_rows(
    tmp_path: Path, packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compress (Taylor pruning + recovery, QAT) and export (int8 calibration) with data.stream: true.

    The Taylor batches, the calibration batches and the export's example input are the train split's
    first rows in file order (2 batches of 4, then 8 rows), not the epoch shuffle's; the recovery and
    QAT fine-tunes train from the stream like distillation; the train split is never held in memory.
    """
    from mmdistill.compression import ort_quant, prune
    from mmdistill.export import onnx as onnx_export
    from mmdistill.recipes import distill as distill_recipe
    from mmdistill.training.epochs import StreamBatches

    seen: dict[str, list] = {"taylor": [], "calibration": [], "example": [], "loaders": []}
    real_prune, real_feeds = prune.prune_structured, ort_quant.calibration_feeds
    real_export = onnx_export.export_onnx
    real_loader = distill_recipe.make_train_loader

    def taylor(model, example, **kw):  # type: ignore[no-untyped-def]
        seen["taylor"].append([i for b in kw["taylor_batches"] for i in b["id"]])
        return real_prune(model, example, **kw)

    def feeds(batches, *a, **kw):  # type: ignore[no-untyped-def]
        seen["calibration"].append([i for b in batches for i in b["id"]])
        return real_feeds(batches, *a, **kw)

    def export(model, path, example, **kw):  # type: ignore[no-untyped-def]
        seen["example"].append(list(example["id"]))
        return real_export(model, path, example, **kw)

    def loader(*a, **kw):  # type: ignore[no-untyped-def]
        out = real_loader(*a, **kw)
        seen["loaders"].append(type(out))
        return out

    monkeypatch.setattr(prune, "prune_structured", taylor)
    monkeypatch.setattr(ort_quant, "calibration_feeds", feeds)
    monkeypatch.setattr(onnx_export, "export_onnx", export)
    monkeypatch.setattr(distill_recipe, "make_train_loader", loader)
    processed: list[str] = []
    real_all = P.Preprocessor.process_all
    monkeypatch.setattr(P.Preprocessor, "process_all",
                        lambda self, raws, *a, **k: real_all(self, processed.extend(r.split for r in raws)
                                                             or raws, *a, **k))
    overrides = _overrides(packed, tmp_path, "compress", True) + [
        "stages=[teacher,student,distill,compress,export,evaluate]", "teacher.train.epochs=1",
        "compress.prune.importance=taylor", "compress.prune.taylor_batches=2", "compress.qat.enabled=true",
        "compress.qat.bits=4", "compress.qat.recover.epochs=1", "export.quantize.calibration_batches=2",
        "export.latency.enabled=false",
    ]
    run_pipeline(load_config("smoke", overrides), tmp_path / "compress")

    first = [r.id for r in S.read_split(packed, "train")]
    assert seen["taylor"] == [first[:8]]  # 2 Taylor batches of data.batch_size=4, in file order
    assert seen["calibration"] and all(c == first[:8] for c in seen["calibration"])  # one per int8 file
    assert seen["example"] and all(e == first[:8] for e in seen["example"])
    # distill kd, then the pruning recovery and QAT fine-tunes: all from the stream
    assert seen["loaders"] == [StreamBatches] * 3
    assert "train" not in processed
    run = tmp_path / "compress"
    summary = json.loads((run / "compress" / "summary.json").read_text())
    assert list(summary["variants"]) == ["kd-pruned", "kd-qat4"]
    info = summary["variants"]["kd-pruned"]["pruning"]
    assert info["importance"] == "taylor" and info["params_after"] < info["params_before"]
    from mmdistill.models.checkpoint import count_parameters
    from mmdistill.recipes.train import load_trained

    pruned = load_trained(run / "students" / "kd-pruned").model
    assert count_parameters(pruned) == info["params_after"]
    stages = {json.loads(line).get("stage") for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert {"student-kd-pruned", "student-kd-qat4"} <= stages
    res = json.loads((run / "export" / "results.json").read_text())
    for v in ("kd", "kd-pruned"):
        assert (run / "export" / f"{v}.onnx").is_file() and (run / "export" / f"{v}.int8.onnx").is_file()
        check = res["artifacts"][f"student-{v}.onnx"]["verify"]  # a failed verification stops the stage
        assert check["max_abs_error"] <= check["atol"] and check["agreement"] >= check["min_agreement"], v
    evaluated = {r["model"] for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert {"student-kd-pruned", "student-kd-pruned.onnx", "student-kd.int8"} <= evaluated


def test_streamed_run_under_torchrun_two_processes(tmp_path: Path, packed: Path) -> None:
    """2 ranks over 21 rows (10 and 11): equal batch counts per rank, so DDP never hangs; the chunked
    cache is built by rank 0 and read by both."""
    proc = run_cli_torchrun(["run", "smoke", *_overrides(packed, tmp_path, "ddp", True)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert json.loads((run / "versions.json").read_text())["world_size"] == 2
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if "val/accuracy" in line]
    assert len(epochs) == 3 + 1 + 1  # teacher 3, scratch 1, kd 1: once per epoch, by rank 0
    summary = {r["model"] for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert summary == {"teacher", "student-scratch", "student-kd"}


def _train_rows_per_call(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the train rows of every ``Preprocessor.process_all`` call (grows as the run goes)."""
    calls: list[int] = []
    real_all = P.Preprocessor.process_all

    def counted(self: P.Preprocessor, raws, *a, **k):  # type: ignore[no-untyped-def]
        raws = list(raws)
        calls.append(sum(r.split == "train" for r in raws))
        return real_all(self, raws, *a, **k)

    monkeypatch.setattr(P.Preprocessor, "process_all", counted)
    return calls


def _check_chunked_cache_equals_forward_raw(run: Path, cfg: Any, packed: Path) -> None:
    """The run's one distillation cache is chunked, holds the 21 train rows, and equals the run's
    teacher's ``forward_raw`` on the raw train records (looked up by id)."""
    from mmdistill.distill.cache_chunks import ChunkedTeacherCache
    from mmdistill.recipes.data import prepare_data
    from mmdistill.recipes.teacher import load_run_teacher

    (cache_dir,) = (run / "cache").glob("teacher-*")
    meta = json.loads((cache_dir / "meta.json").read_text())
    assert meta["format"] == "mmdistill-teacher-cache-chunked/1" and meta["rows"] == 21
    cache = ChunkedTeacherCache.open(run / "cache", meta["key"])
    assert cache is not None
    teacher = load_run_teacher(run, prepare_data(cfg, run), cfg)
    records = S.read_split(packed, "train")
    with torch.inference_mode():
        want = teacher.forward_raw(records)
    want = want.logits if hasattr(want, "logits") else want["logits"]
    torch.testing.assert_close(cache.lookup([r.id for r in records])["logits"], want, rtol=1e-4, atol=1e-5)


def test_streamed_run_with_an_external_teacher_caches_its_raw_outputs_in_chunks(
    tmp_path: Path, packed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``teacher.external`` torch module (a plugin of tests/teachers) with data.stream: true: its
    outputs over the train split are cached in one chunked pass over the shards' raw rows (equal to
    ``forward_raw`` on them), the distill and pruning-recovery fine-tunes read that cache, the train
    split is never preprocessed as a whole, and the teacher is evaluated on the in-memory test rows."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "teachers"))
    from _plugin_teacher import PluginImageAudioTeacher
    from safetensors.torch import save_file

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    save_file(PluginImageAudioTeacher(size=28, num_classes=3).state_dict(), str(tmp_path / "w.safetensors"))
    train_calls = _train_rows_per_call(monkeypatch)  # the teacher's own preprocessing, per batch
    overrides = _overrides(packed, tmp_path, "external", True) + [
        "data.eval_batch_size=5", "stages=[teacher,distill,compress,evaluate]", "plugins=[_plugin_teacher]",
        "teacher.modalities=[image,audio]", "teacher.external.kind=torch",
        "teacher.external.module=plugin_image_audio", f"teacher.external.path={tmp_path / 'w.safetensors'}",
        "teacher.external.kwargs={size: 28, num_classes: 3}", "compress.sweep.enabled=false",
    ]
    cfg = load_config("smoke", overrides)
    run_pipeline(cfg, tmp_path / "external")

    run = tmp_path / "external"
    assert 0 < max(train_calls) <= 5  # raw train rows reach the teacher one cache batch at a time
    assert sum(train_calls) == 21  # once each: one pass over the shards (the rest read the cache)
    assert json.loads((run / "teacher" / "external.json").read_text())["kind"] == "external"
    _check_chunked_cache_equals_forward_raw(run, cfg, packed)
    assert json.loads((run / "eval" / "teacher.json").read_text())["teacher_kind"] == "external"
    summary = {r["model"] for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert {"teacher", "student-kd", "student-kd-pruned"} <= summary


def test_streamed_run_with_a_pretrained_teacher_streams_its_embeddings_and_head_training(
    tmp_path: Path, packed: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``teacher.pretrained`` (a frozen audio encoder: the ``mmdistill`` pretrained encoder of a model
    trained first, in memory) with data.stream: true. The train split's embeddings are stored in one
    chunked pass (features only), the head trains on the stream, the distillation cache is one more
    chunked pass, and no step ever preprocesses more than one cache batch of train rows."""
    base = load_config("smoke", _overrides(packed, tmp_path, "base", False) + ["stages=[teacher]",
                                                                             "teacher.train.epochs=1"])
    run_pipeline(base, tmp_path / "base")
    calls = _train_rows_per_call(monkeypatch)
    overrides = _overrides(packed, tmp_path, "pretrained", True) + [
        "data.eval_batch_size=5", "stages=[teacher,distill,evaluate]", "teacher.train.epochs=2",
        "teacher.pretrained.audio.name=mmdistill",
        f"teacher.pretrained.audio.path={tmp_path / 'base' / 'teacher'}",
        "teacher.embedding.dim=6",
    ]
    cfg = load_config("smoke", overrides)
    with caplog.at_level(logging.INFO, logger="mmdistill"):
        run_pipeline(cfg, tmp_path / "pretrained")

    run = tmp_path / "pretrained"
    assert "train streamed" in caplog.text and "no audio embedding store" not in caplog.text  # reopened
    assert calls and max(calls) <= 5  # train rows: one cache batch, or one row of the head's stream
    assert json.loads((run / "teacher" / "teacher.json").read_text())["kind"] == "frozen_encoders"
    chunked = [json.loads(p.read_text()) for p in (run / "cache" / "embeddings").glob("teacher-*/meta.json")]
    chunked = [m for m in chunked if m.get("format") == "mmdistill-teacher-cache-chunked/1"]
    assert len(chunked) == 1 and chunked[0]["rows"] == 21 and chunked[0]["logits"] is False
    assert chunked[0]["features"] == ["audio.embedding"]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if "val/accuracy" in line and json.loads(line).get("stage") == "teacher"]
    assert len(epochs) == 2  # the head trained on the stream, once per epoch
    _check_chunked_cache_equals_forward_raw(run, cfg, packed)
    assert json.loads((run / "eval" / "teacher.json").read_text())["teacher_kind"] == "frozen_encoders"
    summary = {r["model"] for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert {"teacher", "student-kd"} <= summary


def test_streamed_run_killed_after_its_chunked_cache_resumes_onto_the_same_random_stream(
    tmp_path: Path, packed: Path
) -> None:
    """A streamed run SIGKILLed after the chunked teacher cache was written but before the distilled
    student's first resume state restarts that student with the cache found instead of built. The
    build must not have moved torch's global RNG (the student's modality dropout draws from it), so
    the resumed student equals the uninterrupted run's bit for bit."""
    extra = ["teacher.train.epochs=1", "distill.students.kd.train.epochs=2",
             "distill.students.kd.train.modality_dropout=0.5"]
    runs = {}
    for name in ("straight", "killed"):
        over = [o for o in _overrides(packed, tmp_path, name, True) if o != "logging.quiet=true"]
        runs[name] = ["run", "smoke", *over, *extra]
    assert run_cli(runs["straight"], tmp_path).returncode == 0
    proc = run_cli(runs["killed"], tmp_path, kill_at="student-kd:1:logged")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    killed = tmp_path / "killed"
    assert list((killed / "cache").glob("teacher-*/meta.json"))  # the chunked cache is complete
    assert not (killed / "students" / "kd" / "resume" / "state.json").exists()
    proc = run_cli(["run", "--resume", str(killed)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(tmp_path / "straight" / "students" / "kd" / "model.safetensors")
    b = load_file(killed / "students" / "kd" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
