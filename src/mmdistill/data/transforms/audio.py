"""Audio decoding, resampling and log-mel features (no torchaudio/librosa/scipy needed).

* :func:`load_audio` decodes WAV/FLAC/OGG (anything libsndfile reads) to mono float32.
* :func:`resample` is band-limited windowed-sinc interpolation (Kaiser window), the method of
  resampy / Smith's "Digital Audio Resampling", vectorized with numpy.
* :func:`mel_filterbank` matches ``librosa.filters.mel(htk=True, norm=None).T`` and
  ``torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")``.
* :class:`LogMel` turns a waveform into ``log(mel power + 1e-6)`` frames with ``torch.stft``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from mmdistill.errors import DataError

LOG_EPS = 1e-6
"""Added to the mel power before the log so silence gives log(1e-6) ≈ -13.8, not -inf."""


def load_audio(path: str | Path, target_rate: int) -> np.ndarray:
    """Decode an audio file to a mono float32 waveform at ``target_rate``.

    Integer PCM is scaled to [-1, 1) by libsndfile; channels are averaged; the result is
    resampled with :func:`resample` when the file's rate differs.

    Args:
        path: WAV, FLAC, OGG/Vorbis (any format libsndfile reads).
        target_rate: output sample rate in Hz.

    Returns:
        float32 array ``[N]`` with N >= 1.

    Raises:
        DataError: the file is missing, unreadable, corrupt, empty or holds NaN/inf samples.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("audio file not found; check the path", path=str(p))
    try:
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except PermissionError as e:
        raise DataError(f"cannot read audio file ({e.strerror}); check its permissions", path=str(p)) from e
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, OSError) as e:
        raise DataError(
            f"corrupt or unsupported audio ({type(e).__name__}: {e}); re-export it as 16-bit PCM WAV or FLAC",
            path=str(p),
        ) from e
    if data.shape[0] == 0:
        raise DataError("audio file has no samples (0 frames); remove it or record a non-empty clip",
                        path=str(p))
    if not np.isfinite(data).all():
        raise DataError("audio file holds NaN or infinite samples; re-export it", path=str(p))
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != target_rate:
        wave = resample(wave, int(rate), int(target_rate))
    return np.ascontiguousarray(wave, dtype=np.float32)


def resample(
    wave: np.ndarray,
    orig_rate: int,
    new_rate: int,
    *,
    zero_crossings: int = 16,
    rolloff: float = 0.945,
    beta: float = 8.555,
) -> np.ndarray:
    """Band-limited resampling by windowed-sinc interpolation.

    Output sample ``j`` sits at input time ``t_j = j * orig_rate / new_rate`` (in input samples)
    and is ``sum_k x[k] * h(t_j - k)`` with ``h(d) = 2 fc sinc(2 fc d) w(d)``: a low-pass at
    ``fc = rolloff * min(1, new/orig) / 2`` cycles per input sample (anti-aliasing when
    downsampling), windowed by a Kaiser window spanning ``zero_crossings`` sinc lobes per side.
    Samples outside the signal count as zero. Defaults follow resampy's ``kaiser_best``
    (stopband attenuation around 80 dB). Any rate ratio works, rational or not.

    Args:
        wave: mono waveform ``[N]``.
        orig_rate: rate of ``wave`` in Hz.
        new_rate: wanted rate in Hz.
        zero_crossings: half-width of the filter in sinc zero crossings (quality vs speed).
        rolloff: cutoff as a fraction of the lower Nyquist frequency.
        beta: Kaiser window shape parameter.

    Returns:
        float32 array of length ``ceil(N * new_rate / orig_rate)``.

    Shapes:
        wave: ``[N]`` → ``[ceil(N * new_rate / orig_rate)]``.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be > 0, got orig_rate={orig_rate}, new_rate={new_rate}")
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample expects a mono waveform [N], got shape {x.shape}")
    if orig_rate == new_rate or x.size == 0:
        return x.astype(np.float32)
    n_in = x.size
    n_out = math.ceil(n_in * new_rate / orig_rate)
    fc = 0.5 * rolloff * min(1.0, new_rate / orig_rate)
    half_width = zero_crossings / (2.0 * fc)  # in input samples
    taps = np.arange(-math.floor(half_width), math.floor(half_width) + 2)  # offsets from floor(t_j)

    def kernel(d: np.ndarray) -> np.ndarray:
        window = np.i0(beta * np.sqrt(np.clip(1.0 - (d / half_width) ** 2, 0.0, 1.0))) / np.i0(beta)
        return 2.0 * fc * np.sinc(2.0 * fc * d) * window * (np.abs(d) <= half_width)

    # t_j = j * down / up: its fractional part takes only `up` values (the polyphase phases), so
    # for common rates (44.1k → 16k: up = 160) the kernels are computed once and gathered.
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    table = kernel((np.arange(up)[:, None] / up) - taps[None, :]) if up * taps.size <= 2_000_000 else None
    out = np.empty(n_out, dtype=np.float32)
    # Chunks bound the [chunk, taps] matrices to a few MB whatever the clip length.
    chunk = max(1, 1_000_000 // taps.size)
    for start in range(0, n_out, chunk):
        j = np.arange(start, min(start + chunk, n_out), dtype=np.int64)
        base, phase = np.divmod(j * down, up)
        k = base[:, None] + taps[None, :]  # [chunk, taps] input indices
        h = table[phase] if table is not None else kernel((phase / up)[:, None] - taps[None, :])
        samples = np.where((k >= 0) & (k < n_in), x[np.clip(k, 0, n_in - 1)], 0.0)
        out[start : start + j.size] = np.einsum("ij,ij->i", samples, h)
    return out


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
