"""Manifest faults: each row fault is a DataError naming the file, the row, the value and the fix
(or, under on_error=skip, a reported skip); each file fault is a DataError that is never skipped."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from _corpus import GOOD, jsonl

from mmdistill.data.datasets.manifest import read_manifest
from mmdistill.errors import DataError


def row(**kw: Any) -> dict[str, Any]:
    return {"label": "a", "split": "train", **kw}


@pytest.fixture
def links(ds: Path, tmp_path: Path) -> Path:
    """Symbolic links inside the dataset folder: to a file outside, to a folder outside, inside, broken."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.png").write_bytes((ds / "img" / "ok.png").read_bytes())
    os.symlink(outside / "secret.png", ds / "img" / "to_outside.png")
    os.symlink(outside, ds / "outdir")
    os.symlink(ds / "img" / "ok.png", ds / "img" / "inside.png")
    os.symlink(ds / "img" / "gone.png", ds / "img" / "broken.png")
    return outside


# name -> (the bad row, its kind, a piece of the message naming the value, a piece of the fix)
ROW_FAULTS: dict[str, tuple[dict[str, Any] | str, str, str, str]] = {
    "missing_file": (
        row(image="img/nope.png"),
        "missing file",
        "image file 'img/nope.png' not found (looked for",
        "correct the path",
    ),
    "dotdot": (
        row(image="../elsewhere/secret.png"),
        "path outside root",
        "image path '../elsewhere/secret.png' points outside the manifest's folder",
        "allow_outside_root",
    ),
    "absolute": (
        row(image="/etc/hostname"),
        "path outside root",
        "image path '/etc/hostname' points outside",
        "use a relative path",
    ),
    "symlink_file": (
        row(image="img/to_outside.png"),
        "path outside root",
        "image path 'img/to_outside.png' leads through a symbolic link to ",
        "`data.allow_outside_root: true`",
    ),
    "symlink_dir": (
        row(image="outdir/secret.png"),
        "path outside root",
        "leads through a symbolic link to ",
        "move the file under that folder",
    ),
    "broken_symlink": (
        row(image="img/broken.png"),
        "missing file",
        "'img/broken.png' is a broken symbolic link",
        "correct the path",
    ),
    "folder": (
        row(audio="aud"),
        "missing file",
        "audio file 'aud' is a folder, not a file",
        "correct the path",
    ),
    "nul_in_path": (
        row(image="img/ok.png\x00.txt"),
        "malformed row",
        "image path 'img/ok.png\\x00.txt' contains a NUL character",
        "remove the NUL",
    ),
    "name_too_long": (
        row(image="img/" + "x" * 300 + ".png"),
        "missing file",
        "cannot be looked up (File name too long)",
        "correct the path",
    ),
    "duplicate_id": (
        row(id="good", text="again"),
        "duplicate id",
        "id 'good' is already used by row 1",
        "unique id",
    ),
    "duplicate_int_id": (row(id=7, text="x"), "duplicate id", "id '7' is already used by row 2", "unique id"),
    "unknown_split": (
        row(text="x", split="tran"),
        "unknown split",
        "split 'tran' is not one of ['train', 'val', 'test'] (did you mean 'train'?)",
        "set split to train, val or test",
    ),
    "unknown_label": (
        row(text="x", label="zebra", split="val"),
        "unknown label",
        "label 'zebra' is not among the labels of the train split ['a']",
        "correct the label",
    ),
    "label_list": (
        row(text="x", label=["a"]),
        "malformed row",
        "column 'label' must be a class name or integer, got ['a']",
        "write the class name",
    ),
    "text_number": (row(text=42), "malformed row", "text must be a string, got 42", "quote the text"),
    "image_number": (
        row(image=3),
        "malformed row",
        "column 'image' must be a path string, got 3",
        "write the file",
    ),
    "id_object": (
        row(id={"x": 1}, text="t"),
        "malformed row",
        "id must be a string or an integer, got {'x': 1}",
        "write ids as strings",
    ),
    "bad_json": (
        '{"text": "x", "label": "a",',
        "malformed row",
        "invalid JSON (Expecting property name",
        "one JSON object per line",
    ),
    "not_object": (
        '["x", "a"]',
        "malformed row",
        "expected a JSON object, got list",
        "write one object per line",
    ),
    "duplicate_keys": (
        '{"text": "x", "label": "a", "label": "b", "split": "train"}',
        "malformed row",
        "key(s) ['label'] appear more than once",
        "give each key once",
    ),
    "deep_json": (
        "[" * 50_000 + "]" * 50_000,
        "malformed row",
        "unreadable JSON (nested too deeply)",
        "one flat JSON object per line",
    ),
    "huge_number": (
        '{"id": ' + "9" * 5000 + ', "text": "x", "label": "a", "split": "train"}',
        "malformed row",
        "Exceeds the limit (4300 digits)",
        "write long numbers as strings",
    ),
}


@pytest.mark.parametrize("case", sorted(ROW_FAULTS))
def test_row_faults_name_file_row_value_and_fix(ds: Path, links: Path, case: str) -> None:
    bad, kind, value, fix = ROW_FAULTS[case]
    path = jsonl(ds, [GOOD, row(id=7, text="seven"), bad])
    with pytest.raises(DataError) as info:
        read_manifest(path, progress=False)
    msg = str(info.value)
    assert info.value.path == str(path) and info.value.row == 3
    assert msg.startswith(f"{path}, row 3: {kind}: "), msg
    assert value in msg and fix in msg and msg.endswith("or set `data.on_error: skip` to skip such rows"), msg
    md = read_manifest(path, on_error="skip", progress=False)
    assert [r.id for r in md.records] == ["good", "7"] and [(s.row, s.kind) for s in md.skipped] == [
        (3, kind)
    ]


def test_symlinks_inside_the_folder_work_and_outside_ones_on_request(ds: Path, links: Path) -> None:
    rows = [
        GOOD,
        row(id="in", image="img/inside.png"),
        row(id="out", image="img/to_outside.png"),
        row(id="dir", image="outdir/secret.png"),
    ]
    path = jsonl(ds, rows)
    md = read_manifest(path, allow_outside_root=True, progress=False)
    assert [r.id for r in md.records] == ["good", "in", "out", "dir"] and md.records[2].image is not None
    md = read_manifest(path, on_error="skip", progress=False)
    assert [r.id for r in md.records] == ["good", "in"]
    assert str(links / "secret.png") in md.skipped[0].reason


def test_skip_report_counts_each_kind_and_lists_every_row(ds: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows: list[dict[str, Any] | str] = [
        GOOD,
        row(id="m1", image="img/nope1.png"),
        "{broken json",
        row(id="m2", audio="aud/nope2.wav"),
        row(id="good", text="dup"),
        row(id="ok2", text="fine", split="val"),
        row(id="v", text="x", label="q", split="test"),
    ]
    (ds / "aud" / "bad.wav").write_bytes(b"RIFF nonsense")
    rows.append(row(id="c", audio="aud/bad.wav"))
    path = jsonl(ds, rows)
    with caplog.at_level(logging.WARNING, logger="mmdistill.data.datasets.manifest"):
        md = read_manifest(path, on_error="skip", progress=False)
    assert [r.id for r in md.records] == ["good", "ok2"] and md.rows_read == 8
    assert [(s.row, s.id, s.kind) for s in md.skipped] == [
        (2, "m1", "missing file"),
        (3, None, "malformed row"),
        (4, "m2", "missing file"),
        (5, "good", "duplicate id"),
        (7, "v", "unknown label"),
        (8, "c", "corrupt audio"),
    ]
    assert md.skip_counts() == {
        "missing file": [2, 4],
        "malformed row": [3],
        "duplicate id": [5],
        "unknown label": [7],
        "corrupt audio": [8],
    }
    report = md.skip_summary(path)
    lines = report.splitlines()
    assert lines[0] == (
        f"{path}: skipped 6 of 8 rows (2 missing file, 1 malformed row, 1 duplicate id, "
        "1 unknown label, 1 corrupt audio)"
    )
    assert "  missing file: row(s) 2, 4" in lines and "  corrupt audio: row(s) 8" in lines
    assert any(
        x.startswith("  row 2 (id 'm1'): missing file: image file 'img/nope1.png' not found") for x in lines
    )
    assert any(x.startswith("  row 3: malformed row: invalid JSON") for x in lines)
    assert any(x.startswith("  row 8 (id 'c'): corrupt audio: audio 'aud/bad.wav': ") for x in lines)
    assert report in caplog.text  # the same report is logged


def test_skip_report_cuts_long_lists(ds: Path) -> None:
    rows = [GOOD, *(row(id=f"m{i}", image=f"img/n{i}.png") for i in range(45))]
    md = read_manifest(jsonl(ds, rows), on_error="skip", progress=False)
    report = md.skip_summary("m.jsonl").splitlines()
    assert report[0] == "m.jsonl: skipped 45 of 46 rows (45 missing file)"
    assert report[1].startswith("  missing file: row(s) 2, 3, ") and report[1].endswith(", ... (45 in all)")
    assert report[-1] == "  ... and 25 more (all in ManifestData.skipped and the run's data.json)"
    assert len(md.skipped) == 45


def test_all_rows_bad_is_an_error_with_the_counts(ds: Path) -> None:
    path = jsonl(ds, [row(image="img/a.png"), row(image="img/b.png"), "[]"])
    with pytest.raises(DataError) as info:
        read_manifest(path, on_error="skip", progress=False)
    assert str(info.value).startswith(
        f"{path}: no usable rows: all 3 rows were skipped (2 missing file, "
        "1 malformed row); first: row 1: missing file:"
    )
