"""read_manifest: JSONL and CSV happy paths on tiny generated files, and every error case."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mmdistill.data.datasets.manifest import ManifestData, read_manifest
from mmdistill.errors import DataError

COLUMNS = ["id", "image", "text", "audio", "label", "split", "parity"]
GOOD: list[dict[str, Any]] = [
    {"id": "s0", "image": "img/a.png", "text": "a cat", "audio": "audio/a.wav", "label": "cat",
     "split": "train", "parity": "even"},
    {"image": "img/b.png", "text": "a dög 数字", "label": "dog", "split": "train", "parity": "odd"},
    {"id": "s2", "text": "only text", "label": "cat", "split": "val"},  # missing image and audio
    {"id": "s3", "audio": "audio/b.flac", "label": "dog", "split": "test", "parity": "odd"},
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "ds"
    (r / "img").mkdir(parents=True)
    (r / "audio").mkdir()
    Image.fromarray(np.full((6, 6), 200, dtype=np.uint8)).save(r / "img" / "a.png")
    Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(r / "img" / "b.png")
    sf.write(r / "audio" / "a.wav", np.full(800, 0.5, dtype=np.float32), 8000, subtype="PCM_16")
    sf.write(r / "audio" / "b.flac", np.zeros(1600, dtype=np.float32), 16000)
    (r / "img" / "bad.png").write_bytes(b"not an image at all")
    (r / "audio" / "bad.wav").write_bytes(b"RIFF....WAVEnot audio")
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(tmp_path / "outside.png")
    return r


def write_jsonl(root: Path, rows: list[dict[str, Any] | str], name: str = "m.jsonl") -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    (root / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / name


def write_csv(root: Path, rows: list[dict[str, Any]], *, bom: bool = False, crlf: bool = False) -> Path:
    path = root / "m.csv"
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\r\n" if crlf else "\n")
        w.writeheader()
        w.writerows(rows)
    return path


def _check_good(md: ManifestData) -> None:
    assert md.classes == ["cat", "dog"] and md.task_classes == {"parity": ["even", "odd"]}
    assert md.skipped == []
    a, b, c, d = md.records
    assert [r.id for r in md.records] == ["s0", "2", "s2", "s3"]  # default id = row number
    assert [r.label for r in md.records] == [0, 1, 0, 1]
    assert [r.split for r in md.records] == ["train", "train", "val", "test"]
    assert a.image is not None and a.image.shape == (6, 6) and a.image[0, 0] == 200
    assert b.image is not None and b.image.shape == (5, 7, 3)
    assert b.text == "a dög 数字" and b.audio is None
    # 800 samples at 8 kHz resampled to 16 kHz.
    assert a.audio is not None and a.audio.shape == (1600,) and a.sample_rate == 16000
    np.testing.assert_allclose(a.audio[400:1200], 0.5, atol=1e-3)
    assert c.modalities() == ["text"] and d.modalities() == ["audio"]
    assert a.tasks == {"parity": 0} and c.tasks == {} and d.tasks == {"parity": 1}
    assert a.meta["image"] == "img/a.png" and a.meta["label_name"] == "cat"


def test_jsonl_happy_path(root: Path) -> None:
    _check_good(read_manifest(write_jsonl(root, GOOD), tasks=["parity"], progress=False))


@pytest.mark.parametrize(("bom", "crlf"), [(False, False), (True, True)])
def test_csv_happy_path(root: Path, bom: bool, crlf: bool) -> None:
    path = write_csv(root, GOOD, bom=bom, crlf=crlf)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf") == bom
    _check_good(read_manifest(path, tasks=["parity"], progress=False))


def test_int_labels_sort_numerically_and_given_classes(root: Path) -> None:
    rows = [{"text": f"t{i}", "label": lab, "split": "train"} for i, lab in enumerate([10, 2, 1, 2])]
    md = read_manifest(write_jsonl(root, rows), progress=False)
    assert md.classes == ["1", "2", "10"] and [r.label for r in md.records] == [2, 1, 0, 1]
    md = read_manifest(write_jsonl(root, rows), classes=["10", "2", "1", "7"], progress=False)
    assert [r.label for r in md.records] == [0, 1, 2, 1] and md.classes == ["10", "2", "1", "7"]


def test_unknown_columns_are_reported(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        read_manifest(write_jsonl(root, [{"text": "x", "label": "a", "split": "train", "imgae": "x.png"}]),
                      progress=False)
    assert "imgae" in caplog.text


# Each case: rows appended after the good rows, the error kind, a bit of the fix, extra kwargs.
ERRORS: dict[str, tuple[list[dict[str, Any] | str], str, str]] = {
    "bad_json": (['{"text": "x", "label": "cat",'], "malformed row", "one JSON object per line"),
    "not_object": (['["x", "cat"]'], "malformed row", "one object per line"),
    "missing_file": ([{"image": "img/nope.png", "label": "cat", "split": "train"}], "missing file",
                     "correct the path"),
    "corrupt_image": ([{"image": "img/bad.png", "label": "cat", "split": "train"}], "corrupt image",
                      "replace the file"),
    "corrupt_audio": ([{"audio": "audio/bad.wav", "label": "cat", "split": "train"}], "corrupt audio",
                      "replace the file"),
    "unknown_label": ([{"text": "x", "label": "bird", "split": "val"}], "unknown label", "correct the label"),
    "unknown_split": ([{"text": "x", "label": "cat", "split": "training"}], "unknown split",
                      "train, val or test"),
    "no_modality": ([{"id": "e", "label": "cat", "split": "train", "text": ""}], "no modality",
                    "fill at least one"),
    "duplicate_id": ([{"id": "s0", "text": "x", "label": "cat", "split": "train"}], "duplicate id",
                     "unique id"),
    "dotdot": ([{"image": "../outside.png", "label": "cat", "split": "train"}], "path outside root",
               "allow_outside_root"),
    "absolute": ([{"image": "ABS", "label": "cat", "split": "train"}], "path outside root",
                 "allow_outside_root"),
    "missing_label": ([{"text": "x", "split": "train"}], "malformed row", "give every row a label"),
}


def _bad_rows(case: str, root: Path) -> list[dict[str, Any] | str]:
    rows = ERRORS[case][0]
    outside = str(root.parent / "outside.png")  # "ABS" stands for this absolute path
    return [{**r, "image": outside} if isinstance(r, dict) and r.get("image") == "ABS" else r for r in rows]


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_raise_with_file_row_and_fix(root: Path, case: str) -> None:
    _, kind, fix = ERRORS[case]
    path = write_jsonl(root, [*GOOD, *_bad_rows(case, root)])
    with pytest.raises(DataError) as e:
        read_manifest(path, progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{path}, row 5: {kind}:"), msg
    assert fix in msg and "data.on_error: skip" in msg
    assert e.value.row == 5 and e.value.path == str(path)


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_skipped_and_counted(root: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    _, kind, _ = ERRORS[case]
    path = write_jsonl(root, [*GOOD, *_bad_rows(case, root), *_bad_rows(case, root)])
    with caplog.at_level(logging.WARNING, logger="mmdistill.data.datasets.manifest"):
        md = read_manifest(path, on_error="skip", progress=False)
    assert len(md.records) == 4
    assert [s.row for s in md.skipped] == [5, 6]
    assert all(s.reason.startswith(f"{kind}:") for s in md.skipped)
    assert f"skipped 2 of 6 rows (2 {kind})" in caplog.text


def test_outside_root_allowed_on_request(root: Path) -> None:
    rows = [*GOOD, *_bad_rows("dotdot", root), *_bad_rows("absolute", root)]
    md = read_manifest(write_jsonl(root, rows), allow_outside_root=True, progress=False)
    assert len(md.records) == 6 and md.records[-1].image is not None


def test_csv_wrong_column_count(root: Path) -> None:
    path = write_csv(root, GOOD)
    with open(path, "a", encoding="utf-8") as f:
        f.write("s9,img/a.png,too,many,values,cat,train,even\n")
    with pytest.raises(DataError, match=r"row 5: malformed row: 8 values but the header has 7 columns") as e:
        read_manifest(path, progress=False)
    assert "data.on_error: skip" in str(e.value)
    md = read_manifest(path, on_error="skip", progress=False)
    assert len(md.records) == 4 and md.skipped[0].row == 5


def test_file_level_errors_are_never_skipped(root: Path) -> None:
    with pytest.raises(DataError, match="manifest not found") as e:
        read_manifest(root / "nope.jsonl", on_error="skip")
    assert "nope.jsonl" in str(e.value)
    (root / "empty.jsonl").write_text("\n\n  \n")
    with pytest.raises(DataError, match="no data rows"):
        read_manifest(root / "empty.jsonl", on_error="skip")
    (root / "m.csv").write_text("id,image,text,audio,label,split\n")
    with pytest.raises(DataError, match="no data rows"):
        read_manifest(root / "m.csv", on_error="skip")
    (root / "m.txt").write_text("x")
    with pytest.raises(DataError, match="use .jsonl or .csv"):
        read_manifest(root / "m.txt")
    (root / "nolabel.csv").write_text("image,split\nimg/a.png,train\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['label'\]"):
        read_manifest(root / "nolabel.csv")
    (root / "latin1.jsonl").write_bytes('{"text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_manifest(root / "latin1.jsonl")


def test_all_rows_skipped_is_an_error(root: Path) -> None:
    path = write_jsonl(root, [{"image": "img/nope.png", "label": "cat", "split": "train"}])
    with pytest.raises(DataError, match="all 1 rows were skipped"):
        read_manifest(path, on_error="skip", progress=False)
