"""Audio: mel filterbank vs a reference, LogMel frames and tone placement, resampling, decoding."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from mmdistill.data.transforms.audio import LogMel, load_audio, mel_filterbank, resample
from mmdistill.errors import DataError


def _reference_mel(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=True, norm=None), written out."""
    fftfreqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    mel_f = 700.0 * (10.0 ** (np.linspace(mel(fmin), mel(fmax), n_mels + 2) / 2595.0) - 1.0)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    weights = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    return weights


@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "fmin", "fmax"),
    [(16000, 400, 40, 20.0, 8000.0), (22050, 512, 64, 0.0, 8000.0), (8000, 256, 23, 50.0, 3900.0)],
)
def test_mel_filterbank_matches_reference(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> None:
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sr, fmin, fmax)
    assert fb.shape == (n_fft // 2 + 1, n_mels) and fb.dtype == torch.float32
    np.testing.assert_allclose(fb.numpy(), _reference_mel(sr, n_fft, n_mels, fmin, fmax).T, atol=1e-6)


def test_mel_filterbank_warns_on_empty_filters_and_rejects_bad_range() -> None:
    with pytest.warns(UserWarning, match="empty"):
        mel_filterbank(33, 64, 16000)
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(201, 40, 16000, f_max=9000.0)


def test_logmel_frames_and_center_crop() -> None:
    lm = LogMel()  # 16 kHz, hop 160, 1 s crop
    assert lm(torch.randn(8000)).shape == (40, 51)
    assert lm(np.zeros(16000, dtype=np.float32)).shape == (40, 101)
    long = torch.randn(30000)
    out = lm(long)
    assert out.shape == (40, 101) == (40, lm.max_frames)
    start = (30000 - 16000) // 2
    torch.testing.assert_close(out, lm(long[start : start + 16000]))
    # Silence is log(eps), not -inf.
    torch.testing.assert_close(lm(torch.zeros(1600)), torch.full((40, 11), math.log(1e-6)))


def test_logmel_pure_tone_lands_in_the_right_mel_band() -> None:
    lm = LogMel(max_seconds=None)
    sr, freq = 16000, 1000.0
    wave = torch.sin(2 * math.pi * freq * torch.arange(sr) / sr)
    band = int(lm(wave)[:, 5:-5].mean(dim=1).argmax())
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    centers = 700.0 * (10.0 ** (np.linspace(mel(20.0), mel(8000.0), 42)[1:-1] / 2595.0) - 1.0)
    assert band == int(np.argmin(np.abs(centers - freq)))


def test_logmel_batch_equals_single_calls() -> None:
    lm = LogMel()
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(n, generator=g) for n in (100, 16000, 7999, 0, 25000)]
    batched = lm.batch(waves, chunk_size=2)
    assert [b.shape[1] for b in batched] == [1, 101, 50, 1, 101]
    for w, b in zip(waves, batched, strict=True):
        torch.testing.assert_close(b, lm(w), atol=1e-4, rtol=1e-5)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize(("orig", "new"), [(8000, 16000), (44100, 16000), (16000, 22050), (16000, 16001)])
def test_resample_keeps_frequency_and_length_ratio(orig: int, new: int) -> None:
    n = orig  # 1 s
    x = np.sin(2 * np.pi * 440.0 * np.arange(n) / orig).astype(np.float32)
    y = resample(x, orig, new)
    assert y.dtype == np.float32 and len(y) == math.ceil(n * new / orig)
    assert abs(_peak_hz(y, new) - 440.0) <= 1.0
    # Away from the edges the output is the same sine sampled at the new rate.
    ref = np.sin(2 * np.pi * 440.0 * np.arange(len(y)) / new)
    np.testing.assert_allclose(y[500:-500], ref[500:-500], atol=1e-3)


def test_resample_removes_frequencies_above_new_nyquist() -> None:
    x = np.sin(2 * np.pi * 10000.0 * np.arange(44100) / 44100)
    y = resample(x, 44100, 16000)  # 10 kHz > 8 kHz Nyquist: must not alias to 6 kHz
    assert np.sqrt(np.mean(y[500:-500] ** 2)) < 1e-3
    np.testing.assert_array_equal(resample(x[:10], 8000, 8000), x[:10].astype(np.float32))


def test_load_audio_stereo_int16_resampled(tmp_path: Path) -> None:
    left = np.full(800, 16384, dtype=np.int16)  # 0.5 full scale
    right = np.zeros(800, dtype=np.int16)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 8000, subtype="PCM_16")
    wave = load_audio(tmp_path / "s.wav", 8000)
    assert wave.dtype == np.float32 and wave.shape == (800,)
    np.testing.assert_allclose(wave, 0.25)  # mean of 0.5 and 0
    up = load_audio(tmp_path / "s.wav", 16000)
    assert up.shape == (1600,)
    np.testing.assert_allclose(up[400:1200], 0.25, atol=1e-3)


def test_load_audio_flac_and_ogg(tmp_path: Path) -> None:
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(tmp_path / "a.flac", 16000), x, atol=1e-6)
    sf.write(tmp_path / "a.ogg", x, 16000, format="OGG", subtype="VORBIS")
    y = load_audio(tmp_path / "a.ogg", 16000)
    assert abs(len(y) - 16000) <= 1 and abs(_peak_hz(y, 16000) - 440) <= 1.0


def test_load_audio_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_audio(tmp_path / "missing.wav", 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match="no samples") as e:
        load_audio(tmp_path / "empty.wav", 16000)
    assert "empty.wav" in str(e.value)
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match="corrupt or unsupported audio") as e:
        load_audio(tmp_path / "bad.wav", 16000)
    assert "bad.wav" in str(e.value)
