"""Manifest file faults and CSV/JSONL quirks: a bad file is a DataError naming it and the fix,
never skipped; BOM, CRLF/CR line ends and quoted multi-line cells work."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmdistill.data.datasets.manifest import read_manifest
from mmdistill.errors import DataError

# name -> (manifest file name, its bytes, a piece of the message)
FILE_FAULTS = {
    "empty_jsonl": ("m.jsonl", b"", "the manifest has no data rows"),
    "blank_lines": ("m.jsonl", b"\n  \r\n\n", "the manifest has no data rows"),
    "empty_csv": ("m.csv", b"", "the manifest has no data rows"),
    "header_only": ("m.csv", b"id,text,label,split\r\n", "the manifest has no data rows"),
    "no_label_column": (
        "m.csv",
        b"id,text,split\nx,t,train\n",
        "the header lacks column(s) ['label']; add them",
    ),
    "capitalized_header": (
        "m.csv",
        b"ID,Text,Label,Split\nx,t,a,train\n",
        "the header lacks column(s) ['label', "
        "'split']; column names are lowercase: rename 'Label' to 'label', 'Split' to 'split'",
    ),
    "semicolons": (
        "m.csv",
        b"id;text;label;split\nx;t;a;train\n",
        "is not separated by commas: save the file comma-separated",
    ),
    "duplicate_columns": (
        "m.csv",
        b"id,text,label,split,text\nx,t,a,train,u\n",
        "duplicate column(s) ['text']",
    ),
    "utf16": ("m.jsonl", '{"text": "t", "label": "a", "split": "train"}\n'.encode("utf-16"), "is UTF-16"),
    "wrong_extension": ("m.txt", b"x", "unsupported manifest extension '.txt'; use .jsonl or .csv"),
}


@pytest.mark.parametrize("case", sorted(FILE_FAULTS))
def test_file_faults_are_never_skipped(ds: Path, case: str) -> None:
    name, data, piece = FILE_FAULTS[case]
    path = ds / name
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        read_manifest(path, on_error="skip", progress=False)
    assert str(info.value).startswith(f"{path}: ") and piece in str(info.value), str(info.value)
    assert info.value.row is None


def test_csv_quirks_that_work(ds: Path) -> None:
    text = '\ufeffid,text,label,split\r\ng,"a, quoted\r\nmultiline cell",a,train\r\n\r\nh,plain,a,TRAIN \r\n'
    (ds / "bom_crlf.csv").write_text(text, encoding="utf-8", newline="")
    md = read_manifest(ds / "bom_crlf.csv", progress=False)
    assert [(r.id, r.text, r.split) for r in md.records] == [
        ("g", "a, quoted\r\nmultiline cell", "train"),
        ("h", "plain", "train"),
    ]
    (ds / "cr.csv").write_text("id,text,label,split\rg,old mac,a,train\r", encoding="utf-8", newline="")
    assert read_manifest(ds / "cr.csv", progress=False).records[0].text == "old mac"
    jl = '\ufeff{"id": "j", "text": "t", "label": "a", "split": "train"}\r\n\r\n'
    (ds / "bom_crlf.jsonl").write_text(jl, encoding="utf-8", newline="")
    assert read_manifest(ds / "bom_crlf.jsonl", progress=False).records[0].id == "j"


def test_csv_unclosed_quote_and_wrong_value_count(ds: Path) -> None:
    (ds / "q.csv").write_text('id,text,label,split\ng,fine,a,train\nx,"never closed,a,train\ny,z,a,train\n')
    with pytest.raises(
        DataError,
        match=r"row 2: malformed row: 2 values but the header has 4 columns \(a quote "
        r"opened here is never closed\?\)",
    ):
        read_manifest(ds / "q.csv", progress=False)
    (ds / "n.csv").write_text("id,text,label,split\ng,fine,a,train,extra\nh,ok,a,train\n")
    md = read_manifest(ds / "n.csv", on_error="skip", progress=False)
    assert [r.id for r in md.records] == ["h"]
    assert md.skipped[0].reason.startswith("malformed row: 5 values but the header has 4 columns. Fix: quote")


def test_a_folder_given_as_the_manifest(ds: Path) -> None:
    with pytest.raises(DataError) as info:
        read_manifest(ds, on_error="skip", progress=False)
    assert str(info.value) == f"{ds}: is a folder; point `data.manifest` at the .jsonl or .csv file inside it"
