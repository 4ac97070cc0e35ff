"""Audio decoding, resampling and log-mel features (no torchaudio/librosa/scipy needed).

* :func:`load_audio` decodes WAV/FLAC/OGG (anything libsndfile reads) to mono float32.
* :func:`resample` (:mod:`mmdistill.data.transforms.resample`) is band-limited windowed-sinc
  interpolation (Kaiser window), the method of resampy / Smith's "Digital Audio Resampling".
* :func:`mel_filterbank` matches ``librosa.filters.mel(htk=True, norm=None).T`` and
  ``torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")``.
* :class:`LogMel` turns a waveform into ``log(mel power + 1e-6)`` frames with ``torch.stft``.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mmdistill.data.transforms.resample import resample
from mmdistill.errors import DataError

__all__ = ["LOG_EPS", "MAX_AUDIO_SECONDS", "LogMel", "hz_to_mel", "load_audio", "mel_filterbank", "mel_to_hz",
           "resample"]

log = logging.getLogger(__name__)

LOG_EPS = 1e-6
"""Added to the mel power before the log so silence gives log(1e-6) ≈ -13.8, not -inf."""
MAX_AUDIO_SECONDS = 3600.0
"""Longest clip :func:`load_audio` decodes, in seconds, judged from the header before decoding: an
hour of silence compresses to a small FLAC but decodes to gigabytes (an audio decompression bomb)."""
_WAV_SHORT = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")  # libsndfile's log of a short WAV


def load_audio(path: str | Path, target_rate: int, data: bytes | None = None) -> np.ndarray:
    """Decode an audio file to a mono float32 waveform at ``target_rate``.

    Integer PCM of any width (8-bit unsigned, 16, 24, 32-bit) and u-law/A-law are scaled to
    [-1, 1) by libsndfile; float files are kept as written (values beyond ±1 are not clipped);
    channels are averaged (mono = mean of all channels); the result is resampled with
    :func:`resample` when the file's rate differs. A WAV cut short (its header promises more
    data than the file holds) gives the samples present, with a warning. The format is read from
    the file's content, not its extension.

    Args:
        path: WAV, FLAC, OGG/Vorbis (any format libsndfile reads).
        target_rate: output sample rate in Hz.
        data: the file's bytes, already read (a packed shard); ``path`` then only names it in messages.

    Returns:
        float32 array ``[N]`` with N >= 1.

    Raises:
        DataError: the file is missing, unreadable, corrupt, empty, longer than
            :data:`MAX_AUDIO_SECONDS`, or holds NaN/inf samples.
    """
    p = Path(path)
    if data is None and not p.is_file():
        raise DataError("audio file not found; check the path", path=str(p))
    try:
        with sf.SoundFile(str(p) if data is None else io.BytesIO(data)) as f:
            rate = f.samplerate
            if f.frames > MAX_AUDIO_SECONDS * rate:
                length = f"{f.frames / rate:,.0f} s long ({f.frames:,} frames at {rate} Hz)"
                raise DataError(f"audio is {length}, more than the {MAX_AUDIO_SECONDS:,.0f} s allowed; cut "
                                "it into clips (the model sees max_seconds of each)", path=str(p))
            samples = f.read(dtype="float32", always_2d=True)
            short = _WAV_SHORT.search(f.extra_info) if f.format == "WAV" else None
    except PermissionError as e:
        raise DataError(f"cannot read audio file ({e.strerror}); check its permissions", path=str(p)) from e
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as e:
        raise DataError(
            f"corrupt or unsupported audio ({type(e).__name__}: {e}); re-export it as 16-bit PCM WAV or FLAC",
            path=str(p),
        ) from e
    if short is not None and int(short.group(1)) > int(short.group(2)):
        log.warning("%s: the WAV header promises %s data bytes but the file holds %s (cut short?); using the "
                    "%d frames present", p, short.group(1), short.group(2), samples.shape[0])
    if samples.shape[0] == 0:
        raise DataError("audio file has no samples (0 frames: empty, or cut short before its first frame); "
                        "remove the row or replace the file with a non-empty clip", path=str(p))
    if not np.isfinite(samples).all():
        raise DataError("audio file holds NaN or infinite samples; re-export it", path=str(p))
    wave = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate != target_rate:
        wave = resample(wave, int(rate), int(target_rate))
    return np.ascontiguousarray(wave, dtype=np.float32)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular mel filters on the HTK scale, without area normalization.

    ``n_mels + 2`` points equally spaced in mel between ``f_min`` and ``f_max`` give the edges;
    filter ``m`` rises linearly from point ``m`` to its peak of 1 at point ``m + 1`` and falls to
    0 at point ``m + 2``. FFT bin ``i`` sits at ``i * (sample_rate / 2) / (n_freqs - 1)`` Hz.

    Args:
        n_freqs: number of FFT bins (``n_fft // 2 + 1``).
        n_mels: number of mel filters.
        sample_rate: audio rate in Hz.
        f_min: lowest edge in Hz.
        f_max: highest edge in Hz (default ``sample_rate / 2``).

    Returns:
        float32 tensor; ``power[..., n_freqs, frames]`` → mel via ``fb.T @ power``.

    Shapes:
        output: ``[n_freqs, n_mels]``.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if n_freqs < 2 or n_mels < 1:
        raise ValueError(f"need n_freqs >= 2 and n_mels >= 1, got n_freqs={n_freqs}, n_mels={n_mels}")
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, "
            f"got f_min={f_min}, f_max={f_max}"
        )
    freqs = np.linspace(0.0, sample_rate / 2.0, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    left, center, right = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - left[None, :]) / (center - left)[None, :]
    down = (right[None, :] - freqs[:, None]) / (right - center)[None, :]
    fb = np.maximum(0.0, np.minimum(up, down))
    if np.any(fb.max(axis=0) == 0.0):
        # Legal but useless: a filter narrower than one FFT bin sees nothing (as librosa warns).
        warnings.warn(
            f"{int(np.sum(fb.max(axis=0) == 0.0))} of {n_mels} mel filters are empty; "
            "use fewer mels or a larger n_fft",
            stacklevel=2,
        )
    return torch.from_numpy(fb.astype(np.float32))


class LogMel:
    """Waveform → log-mel spectrogram.

    ``torch.stft(center=True, pad_mode="constant", window=hann(n_fft))`` → power ``|X|^2`` →
    mel filterbank (:func:`mel_filterbank`) → ``log(mel + 1e-6)``. Waves longer than
    ``max_seconds`` are **center-cropped** to ``round(max_seconds * sample_rate)`` samples so the
    frame count is bounded: ``frames = 1 + min(N, max_samples) // hop_length``.

    Args:
        sample_rate: rate of the input waves in Hz.
        n_fft: FFT size (and window length) in samples; 400 = 25 ms at 16 kHz.
        hop_length: frame step in samples; 160 = 10 ms at 16 kHz.
        n_mels: number of mel bands.
        f_min: lowest mel edge in Hz.
        f_max: highest mel edge in Hz (default Nyquist).
        max_seconds: crop length in seconds, or None to keep whole waves.

    Shapes:
        input: ``[N]`` (tensor or numpy) → output: float32 ``[n_mels, 1 + min(N, max_samples) // hop]``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 40,
        f_min: float = 20.0,
        f_max: float | None = None,
        max_seconds: float | None = 1.0,
    ) -> None:
        if n_fft < 2 or hop_length < 1:
            raise ValueError(f"LogMel needs n_fft >= 2 and hop_length >= 1, got {n_fft}, {hop_length}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"LogMel max_seconds must be > 0 or None, got {max_seconds}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.f_min = float(f_min)
        self.f_max = f_max
        self.max_seconds = max_seconds
        self.max_samples = None if max_seconds is None else max(1, round(max_seconds * sample_rate))
        self.fb = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max)
        self.window = torch.hann_window(n_fft)

    def __repr__(self) -> str:
        return (f"LogMel(sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}, "
                f"max_seconds={self.max_seconds})")

    @property
    def max_frames(self) -> int | None:
        """Upper bound on the frame count (None when waves are not cropped)."""
        return None if self.max_samples is None else 1 + self.max_samples // self.hop_length

    def num_frames(self, n_samples: int) -> int:
        """Frames produced for a wave of ``n_samples`` samples (after cropping)."""
        n = n_samples if self.max_samples is None else min(n_samples, self.max_samples)
        return 1 + max(n, 1) // self.hop_length

    def _prepare(self, wave: torch.Tensor | np.ndarray) -> torch.Tensor:
        w = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave)
        w = w.detach().to(torch.float32)
        if w.ndim != 1:
            raise ValueError(f"LogMel expects a mono waveform [N], got shape {tuple(w.shape)}")
        if w.numel() == 0:
            w = w.new_zeros(1)  # an empty clip gives one silent frame rather than a crash
        if self.max_samples is not None and w.numel() > self.max_samples:
            start = (w.numel() - self.max_samples) // 2
            w = w[start : start + self.max_samples]
        return w

    def _features(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` → ``[B, n_mels, 1 + N // hop]``."""
        spec = torch.stft(
            waves, self.n_fft, hop_length=self.hop_length, window=self.window, center=True,
            pad_mode="constant", return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        return torch.log(torch.matmul(self.fb.T, power) + LOG_EPS)

    def __call__(self, wave: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Log-mel of one wave; see the class docstring."""
        return self._features(self._prepare(wave)[None])[0].contiguous()

    def batch(self, waves: Sequence[torch.Tensor | np.ndarray], chunk_size: int = 256) -> list[torch.Tensor]:
        """Log-mel of many waves at once, identical to calling the transform on each.

        Waves are sorted by length, zero-padded on the right within chunks and run through one
        ``stft`` per chunk. Right padding is exact: with ``center=True`` and constant (zero)
        padding, frame ``t <= N // hop`` only sees samples that were zero-padded anyway.

        Args:
            waves: mono waveforms ``[N_i]``.
            chunk_size: waves per ``stft`` call (bounds memory).

        Returns:
            list of float32 ``[n_mels, frames_i]`` in input order.
        """
        prepared = [self._prepare(w) for w in waves]
        order = sorted(range(len(prepared)), key=lambda i: prepared[i].numel())
        out: list[torch.Tensor | None] = [None] * len(prepared)
        for s in range(0, len(order), chunk_size):
            idx = order[s : s + chunk_size]
            longest = max(prepared[i].numel() for i in idx)
            stacked = torch.zeros(len(idx), longest)
            for row, i in enumerate(idx):
                stacked[row, : prepared[i].numel()] = prepared[i]
            feats = self._features(stacked)
            for row, i in enumerate(idx):
                frames = 1 + prepared[i].numel() // self.hop_length
                out[i] = feats[row, :, :frames].clone()
        return [o for o in out if o is not None]
