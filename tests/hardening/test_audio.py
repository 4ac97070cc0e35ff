"""Damaged and unusual audio: each is converted properly (mono float32 at the target rate) or
refused with a DataError naming the file and the fix, through load_audio, LogMel and the manifest."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from _corpus import GOOD, image_bytes, jsonl, tone, wav_bytes
from PIL import Image

from mmdistill.data.datasets.manifest import read_manifest
from mmdistill.data.transforms import audio as audio_mod
from mmdistill.data.transforms.audio import LogMel, load_audio
from mmdistill.errors import DataError

RATE = 16000
const = np.full(1600, 0.25, dtype=np.float32)

# name -> (file bytes, file name, expected length at 16 kHz, expected value in the middle or None)
WORKS = {
    "8bit_unsigned": (wav_bytes(const, RATE, "PCM_U8"), "a.wav", 1600, 0.25),
    "16bit": (wav_bytes(const, RATE, "PCM_16"), "a.wav", 1600, 0.25),
    "24bit": (wav_bytes(const, RATE, "PCM_24"), "a.wav", 1600, 0.25),
    "32bit_int": (wav_bytes(const, RATE, "PCM_32"), "a.wav", 1600, 0.25),
    "float32": (wav_bytes(const, RATE, "FLOAT"), "a.wav", 1600, 0.25),
    "float64": (wav_bytes(const, RATE, "DOUBLE"), "a.wav", 1600, 0.25),
    "float_loud_kept": (wav_bytes(const * 8, RATE, "FLOAT"), "a.wav", 1600, 2.0),
    "ulaw": (wav_bytes(const, RATE, "ULAW"), "a.wav", 1600, 0.25),
    "stereo_mean": (wav_bytes(np.stack([const * 2, const * 0], 1), RATE), "a.wav", 1600, 0.25),
    "six_channels": (wav_bytes(np.tile(const[:, None], (1, 6)), RATE), "a.wav", 1600, 0.25),
    "8k_upsampled": (wav_bytes(const[:800], 8000), "a.wav", 1600, 0.25),
    "44k1_downsampled": (wav_bytes(np.full(4410, 0.25, np.float32), 44100), "a.wav", 1600, 0.25),
    "odd_rate": (wav_bytes(np.full(7919, 0.25, np.float32), 7919), "a.wav", 16000, 0.25),
    "flac_named_wav": (wav_bytes(const, RATE, "PCM_16", "FLAC"), "a.wav", 1600, 0.25),
    "ogg_named_flac": (wav_bytes(tone(0.1, RATE), RATE, "VORBIS", "OGG"), "a.flac", 1600, None),
    "one_sample": (wav_bytes(const[:1], RATE), "a.wav", 1, 0.25),
    "very_long_30s": (wav_bytes(tone(30.0, RATE, amp=0.1), RATE), "a.wav", 480000, None),
}


@pytest.mark.parametrize("case", sorted(WORKS))
def test_unusual_audio_is_converted(tmp_path: Path, case: str) -> None:
    data, name, length, value = WORKS[case]
    path = tmp_path / name
    path.write_bytes(data)
    wave = load_audio(path, RATE)
    assert wave.dtype == np.float32 and wave.ndim == 1 and abs(len(wave) - length) <= 1
    if value is not None:
        mid = wave[len(wave) // 4 : 3 * len(wave) // 4] if len(wave) > 4 else wave
        np.testing.assert_allclose(mid, value, atol=0.01)
    feats = LogMel(sample_rate=RATE, n_mels=20, max_seconds=1.0)(wave)
    assert feats.shape[0] == 20 and 1 <= feats.shape[1] <= 101 and bool(feats.isfinite().all())


def test_stereo_rule_is_the_mean_of_the_channels(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    path.write_bytes(wav_bytes(np.stack([const * 2, -const], 1), RATE, "FLOAT"))  # 0.5 and -0.25
    np.testing.assert_allclose(load_audio(path, RATE), 0.125, atol=1e-6)


def test_truncated_wav_gives_the_samples_present_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = wav_bytes(np.full(8000, 0.25, np.float32), RATE)
    path = tmp_path / "cut.wav"
    path.write_bytes(full[: 44 + 2 * 1000])  # header + 1000 of 8000 frames
    with caplog.at_level(logging.WARNING, logger="mmdistill.data.transforms.audio"):
        wave = load_audio(path, RATE)
    assert len(wave) == 1000
    assert (
        f"{path}: the WAV header promises 16000 data bytes but the file holds 2000 (cut short?); using "
        "the 1000 frames present" in caplog.text
    )


# name -> (file bytes, the expected message after "<path>: ")
BROKEN = {
    "empty": (b"", "corrupt or unsupported audio (LibsndfileError: "),
    "text": (b"hello, I am not audio\n", "corrupt or unsupported audio (LibsndfileError: "),
    "png_named_wav": (image_bytes(Image.new("L", (4, 4)), "PNG"), "corrupt or unsupported audio ("),
    "zero_frames": (wav_bytes(np.zeros(0, np.float32), RATE), "audio file has no samples (0 frames"),
    "nan_samples": (
        wav_bytes(np.array([0.1, np.nan, 0.2], np.float32), RATE, "FLOAT"),
        "audio file holds NaN or infinite samples; re-export it",
    ),
    "truncated_flac": (
        wav_bytes(tone(1.0, RATE), RATE, "PCM_16", "FLAC")[:3000],
        "corrupt or unsupported audio (",
    ),
    "truncated_ogg": (
        wav_bytes(tone(1.0, RATE), RATE, "VORBIS", "OGG")[:300],
        "corrupt or unsupported audio (",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_damaged_audio_names_the_file_and_the_fix(tmp_path: Path, case: str) -> None:
    data, start = BROKEN[case]
    path = tmp_path / f"{case}.wav"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        load_audio(path, RATE)
    msg = str(info.value)
    assert info.value.path == str(path) and msg.startswith(f"{path}: {start}"), msg
    assert any(fix in msg for fix in ("re-export it", "remove the row or replace the file"))


def test_too_long_audio_is_refused_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.flac"
    path.write_bytes(wav_bytes(np.zeros(3 * RATE, np.float32), RATE, "PCM_16", "FLAC"))
    monkeypatch.setattr(audio_mod, "MAX_AUDIO_SECONDS", 2.0)
    with pytest.raises(DataError) as info:
        load_audio(path, RATE)
    assert str(info.value) == (
        f"{path}: audio is 3 s long (48,000 frames at 16000 Hz), more than the 2 s "
        "allowed; cut it into clips (the model sees max_seconds of each)"
    )


def test_manifest_skips_exactly_the_bad_audio_rows(ds: Path) -> None:
    (ds / "aud" / "stereo.wav").write_bytes(WORKS["stereo_mean"][0])
    (ds / "aud" / "empty.wav").write_bytes(b"")
    (ds / "aud" / "zero.wav").write_bytes(BROKEN["zero_frames"][0])
    rows = [
        GOOD,
        {"id": "st", "audio": "aud/stereo.wav", "label": "a", "split": "train"},
        {"id": "e", "audio": "aud/empty.wav", "label": "a", "split": "train"},
        {"id": "z", "audio": "aud/zero.wav", "text": "has text too", "label": "a", "split": "test"},
    ]
    path = jsonl(ds, rows)
    md = read_manifest(path, on_error="skip", progress=False, target_sample_rate=8000)
    assert [r.id for r in md.records] == ["good", "st"]
    assert md.records[1].sample_rate == 8000 and len(md.records[1].audio) == 800  # resampled 16k -> 8k
    assert [(s.row, s.id, s.kind) for s in md.skipped] == [
        (3, "e", "corrupt audio"),
        (4, "z", "corrupt audio"),
    ]
    assert md.skipped[1].reason.startswith("corrupt audio: audio 'aud/zero.wav': audio file has no samples")
    assert md.skipped[1].reason.endswith("Fix: replace the file with a valid WAV/FLAC/OGG or remove the row")
