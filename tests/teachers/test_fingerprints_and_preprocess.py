"""Raw-record fingerprints and a teacher's own preprocessing, apart from the student's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from _teacher_data import make_records

from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.records import RawSample
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.errors import ConfigError, DataError
from mmdistill.teachers.fingerprint import files_fingerprint, raw_fingerprint
from mmdistill.teachers.preprocess import PreprocessSpec


def test_raw_fingerprint_sees_each_modality_and_can_ignore_the_others(records: list[RawSample]) -> None:
    base = raw_fingerprint(records)
    assert base == raw_fingerprint(make_records())  # deterministic
    edits = {
        "text": dataclasses.replace(records[0], text="the number one"),
        "image": dataclasses.replace(records[0], image=records[0].image + 1),
        "audio": dataclasses.replace(records[0], audio=records[0].audio * 0.5),
        "rate": dataclasses.replace(records[0], sample_rate=8000),
        "label": dataclasses.replace(records[0], label=3),
    }
    for what, changed in edits.items():
        assert raw_fingerprint([changed, *records[1:]]) != base, what
    text_only = raw_fingerprint(records, modalities=["text"], labels=False)
    for what in ("image", "audio", "rate", "label"):
        assert raw_fingerprint([edits[what], *records[1:]], modalities=["text"], labels=False) == text_only
    assert raw_fingerprint([edits["text"], *records[1:]], modalities=["text"], labels=False) != text_only
    assert raw_fingerprint(records[::-1]) != base  # order is part of the key (rows follow it)
    with pytest.raises(DataError, match="not a RawSample"):
        raw_fingerprint([{"id": "x"}])  # type: ignore[list-item]


def test_files_fingerprint_changes_with_one_byte(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.json"
    a.write_bytes(b"\x00" * 100)
    b.write_text("{}")
    first = files_fingerprint([a, b])
    assert files_fingerprint([b, a]) == first
    a.write_bytes(b"\x00" * 99 + b"\x01")
    assert files_fingerprint([a, b]) != first
    with pytest.raises(DataError, match="missing.bin"):
        files_fingerprint([tmp_path / "missing.bin"])


def test_teacher_preprocessing_differs_from_the_students(
        records: list[RawSample], tokenizer_file: Path) -> None:
    teacher = PreprocessSpec(
        image={"size": 20, "channels": 3, "mean": 0.4, "std": 0.2},
        audio={"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 16, "max_seconds": 0.5},
        text={"tokenizer": str(tokenizer_file), "max_length": 4},
    )
    student = Preprocessor(image=ImageTransform(size=28), modalities=["image"])
    t = teacher.preprocessor()(records[0])
    assert t["image"].shape == (3, 20, 20) and student(records[0])["image"].shape == (1, 28, 28)
    # 16 kHz record resampled to the teacher's 8 kHz: 0.2 s = 1600 samples -> 1 + 1600 // 80 frames.
    assert t["audio"].shape == (16, 21)
    assert t["text"].shape[0] <= 4 and t["text"].dtype == torch.long
    assert torch.equal(t["image"], ImageTransform(size=20, channels=3, mean=0.4, std=0.2)(records[0].image))
    desc = teacher.describe()
    assert desc["text"]["tokenizer_sha256"] and PreprocessSpec.from_settings(desc) == teacher
    assert teacher.modalities == ["image", "text", "audio"]


def test_bad_preprocessing_settings_name_the_key(tokenizer_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"teacher.preprocessing.image: unknown key\(s\) \['sizee'\]"):
        PreprocessSpec(image={"sizee": 3})
    with pytest.raises(ConfigError, match="teacher.preprocessing.text.tokenizer"):
        PreprocessSpec(text={"max_length": 3})
    with pytest.raises(ConfigError, match=r"no settings for \['audio'\]"):
        PreprocessSpec(text={"tokenizer": str(tokenizer_file)}).preprocessor(["text", "audio"])
