"""A smoke run from Parquet shards equals the same run from the manifest they were packed from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import write_manifest

CLI = [sys.executable, "-m", "mmdistill.cli.main"]
pytestmark = pytest.mark.slow
pytest.importorskip("pyarrow")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_run_from_shards_matches_the_manifest_run(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "ds", n_per_class=8)
    proc = _run(["data", "pack", str(manifest), "packed", "--rows-per-shard", "5"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    common = ["stages=[teacher,evaluate]", "teacher.train.epochs=1", "--output-dir", str(tmp_path)]
    for name, source in (("shards", ["data.source=shards", "data.shards=packed"]),
                         ("manifest", ["data.source=manifest", f"data.manifest={manifest}"])):
        proc = _run(["run", "smoke", *source, *common, "--name", name], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    data = {n: json.loads((tmp_path / n / "data.json").read_text()) for n in ("shards", "manifest")}
    assert data["shards"]["source"] == f"shards {tmp_path / 'packed'}"
    assert data["shards"]["sizes"] == data["manifest"]["sizes"] == {"train": 12, "val": 2, "test": 2}
    assert data["shards"]["vocab_size"] == data["manifest"]["vocab_size"]
    res = {n: json.loads((tmp_path / n / "eval" / "teacher.json").read_text())
           for n in ("shards", "manifest")}
    for key in ("accuracy", "macro_f1", "ece", "confusion_matrix"):
        assert res["shards"][key] == res["manifest"][key], key  # same records, same seed: same numbers
