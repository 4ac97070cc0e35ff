"""`data.stream: true`: a run whose train split streams from Parquet shards with bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import write_manifest
from mmdistill.config import load_config
from mmdistill.data import preprocess as P
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
    monkeypatch.setitem(S.ShardStream.__init__.__kwdefaults__, "buffer_size", BUFFER)
    peaks: list[int] = []
    real_iter = S.ShardStream.__iter__

    def tracked(self: S.ShardStream):  # type: ignore[no-untyped-def]
        yield from real_iter(self)
        peaks.append(self.peak_held if self.shuffle else 1)

    monkeypatch.setattr(S.ShardStream, "__iter__", tracked)
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


def test_streamed_run_under_torchrun_two_processes(tmp_path: Path, packed: Path) -> None:
    """2 ranks over 21 rows (10 and 11): equal batch counts per rank, so DDP never hangs; the chunked
    cache is built by rank 0 and read by both."""
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "mmdistill.cli.main", "run", "smoke",
         *_overrides(packed, tmp_path, "ddp", True)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    assert json.loads((run / "versions.json").read_text())["world_size"] == 2
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if "val/accuracy" in line]
    assert len(epochs) == 3 + 1 + 1  # teacher 3, scratch 1, kd 1: once per epoch, by rank 0
    summary = {r["model"] for r in json.loads((run / "eval" / "summary.json").read_text())}
    assert summary == {"teacher", "student-scratch", "student-kd"}
