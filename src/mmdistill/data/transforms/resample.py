"""Band-limited resampling of mono waveforms by windowed-sinc interpolation (numpy only).

The method of resampy and of Smith's "Digital Audio Resampling": each output sample is a sum of
input samples weighted by a Kaiser-windowed sinc low-pass, vectorized with numpy and polyphase
tables for rational rate ratios. Used by :func:`mmdistill.data.transforms.audio.load_audio`.
"""

from __future__ import annotations

import math

import numpy as np


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
