"""`mmdistill data pack MANIFEST OUT`: exit 0 with shards written, exit 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _helpers import write_manifest
from mmdistill.cli.main import main

pytest.importorskip("pyarrow")


def _exit(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0)


def test_pack_writes_shards_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_manifest(tmp_path / "ds")
    assert _exit(["data", "pack", str(manifest), str(tmp_path / "out"), "--rows-per-shard", "3"]) == 0
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [e["file"] for e in index["splits"]["train"]] == ["train-00000.parquet", "train-00001.parquet",
                                                             "train-00002.parquet"]
    assert "shards written to" in capsys.readouterr().out


def test_pack_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit(["data", "pack", str(tmp_path / "nope.jsonl"), str(tmp_path / "out")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert _exit(["data", "pack", str(tmp_path / "nope.jsonl"), str(tmp_path / "out"),
                  "--rows-per-shard", "0"]) == 2
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "gone.png", "label": "a", "split": "train"}) + "\n")
    assert _exit(["data", "pack", str(manifest), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "gone.png" in err and "row 1" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "index.json").exists()
