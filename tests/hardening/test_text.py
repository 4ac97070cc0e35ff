"""Odd text through the real path: manifest (JSONL and CSV) → tokenizer training → Preprocessor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _corpus import GOOD, jsonl

from mmdistill.data.batch import PAD_ID
from mmdistill.data.datasets.manifest import read_manifest
from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.transforms.text import TextTokenizer
from mmdistill.errors import DataError

LONG = "word " * 60_000  # 300 kB: over the csv module's default 128 KiB cell limit
ODD = {
    "whitespace": "   \t  ",
    "control": "\x01\x07\x1b[31mred\x1b[0m\u200b\u202e",
    "nul": "before\x00after",
    "mixed_scripts": "Hello Привет 你好 مرحبا שלום नमस्ते Ωμέγα",
    "rtl": "\u202bمرحبا بالعالم\u202c",
    "emoji": "cats 🐈‍⬛ and 👋🏽 waves 🇫🇷",
    "long": LONG,
    "crlf_inside": "line one\r\nline two",
}


def _rows() -> list[dict]:
    return [GOOD, *({"id": k, "text": v, "label": "a", "split": "train"} for k, v in ODD.items())]


def _check(records: list) -> None:
    texts = {r.id: r.text for r in records}
    assert {k: texts[k] for k in ODD} == ODD  # kept exactly as written
    tok = TextTokenizer.train([r.text for r in records], vocab_size=300)
    pre = Preprocessor(tokenizer=tok, max_text_length=16, modalities=["text"])
    samples = {s["id"]: s for s in pre.process_all(records, progress=False)}
    for rid, s in samples.items():
        ids = s["text"]
        assert 1 <= len(ids) <= 16 and PAD_ID not in ids.tolist(), rid
    assert samples["whitespace"]["text"].tolist() == [tok.unk_id]  # no token: one [UNK], never empty
    assert len(samples["long"]["text"]) == 16  # truncated
    assert "before" in tok.decode(samples["nul"]["text"]) and "after" in tok.decode(samples["nul"]["text"])
    assert "привет" in tok.decode(samples["mixed_scripts"]["text"])  # lowercased, kept


def test_odd_text_in_jsonl_is_kept_and_tokenized(ds: Path) -> None:
    md = read_manifest(jsonl(ds, _rows()), progress=False)
    assert md.skipped == []
    _check(md.records)


def test_odd_text_in_csv_with_bom_and_crlf(ds: Path) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, ["id", "text", "label", "split"], lineterminator="\r\n")
    w.writeheader()
    w.writerows(_rows())
    path = ds / "m.csv"
    path.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8"))
    md = read_manifest(path, progress=False)
    assert md.skipped == [] and md.rows_read == len(ODD) + 1
    _check(md.records)


def test_empty_text_is_no_text(ds: Path) -> None:
    rows = [
        GOOD,
        {"id": "e1", "text": "", "image": "img/ok.png", "label": "a", "split": "train"},
        {"id": "e2", "text": "", "label": "a", "split": "train"},
    ]
    path = jsonl(ds, rows)
    with pytest.raises(DataError) as info:
        read_manifest(path, progress=False)
    assert str(info.value).startswith(
        f"{path}, row 3: no modality: the row has no image, text or audio. Fix: fill"
    )
    md = read_manifest(path, on_error="skip", progress=False)
    assert md.records[1].text is None and md.records[1].image is not None
    assert [(s.row, s.id, s.kind) for s in md.skipped] == [(3, "e2", "no modality")]


def test_invalid_utf8_in_a_csv_names_the_line_and_the_byte(ds: Path) -> None:
    path = ds / "m.csv"
    path.write_bytes(b"id,text,label,split\ng,fine,a,train\nx,caf\xe9 au lait,a,train\n")
    with pytest.raises(DataError) as info:
        read_manifest(path, on_error="skip", progress=False)  # a file-level problem: never skipped
    assert str(info.value) == (
        f"{path}: the manifest is not UTF-8 (byte 0xe9 at line 3, byte 6 of the line; "
        "Latin-1 or Windows-1252 text?); save it as UTF-8"
    )


def test_utf16_manifest_is_named_as_such(ds: Path) -> None:
    path = ds / "m.csv"
    path.write_bytes("id,text,label,split\ng,fine,a,train\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"m.csv: the manifest is UTF-16 .*; save it as UTF-8"):
        read_manifest(path, progress=False)


def test_unpaired_surrogate_escape_is_a_malformed_row(ds: Path) -> None:
    bad = '{"id": "s", "text": "half an emoji \\ud83d here", "label": "a", "split": "train"}'
    path = jsonl(ds, [GOOD, bad])
    with pytest.raises(DataError) as info:
        read_manifest(path, progress=False)
    assert str(info.value).startswith(
        f"{path}, row 2: malformed row: column 'text' holds an unpaired surrogate '\\ud83d' at character 15, "
        "which is not Unicode. Fix: fix or remove that \\u escape"
    )
    md = read_manifest(path, on_error="skip", progress=False)
    assert [r.id for r in md.records] == ["good"] and md.skipped[0].id == "s"
    json.dumps([s.reason for s in md.skipped]).encode("utf-8")  # the report itself is writable
    pair = '{"id": "p", "text": "a whole emoji \\ud83d\\ude00", "label": "a", "split": "train"}'
    assert read_manifest(jsonl(ds, [GOOD, pair]), progress=False).records[1].text == "a whole emoji 😀"
