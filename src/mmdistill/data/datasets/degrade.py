"""Deterministic degradations for the built-in ``mmdigits`` dataset.

Every sample carries a seed and a set of *heavily* degraded modalities, both fixed when the asset
is built. Image and audio degradations are applied here at load time, so they cost no asset bytes
and their strength can be tuned without rebuilding; text degradations happen at build time (the
stored phrase is final) through :func:`typo`. All knobs live in :class:`DegradeParams`.

The design ("complementary modalities"): each modality is heavily degraded independently with
probability ``p_heavy``, redrawn when all three would be, so one modality alone is often not
enough but the three together almost always are. See ``docs/dataset.md``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

IMAGE_HEAVY_KINDS: tuple[str, ...] = ("occlude", "erase_half", "noise", "low_contrast")
AUDIO_HEAVY_KINDS: tuple[str, ...] = ("noise", "clip", "truncate")
TEXT_HEAVY_KINDS: tuple[str, ...] = ("partial", "typos")

# Salts keep the image and audio random streams of one sample independent of each other.
_IMAGE_SALT = 1
_AUDIO_SALT = 2


@dataclass(frozen=True)
class DegradeParams:
    """Every knob of the mmdigits degradations.

    Build-time knobs (changing them needs ``scripts/build_builtin_dataset.py``): ``p_heavy``,
    ``text_*``. Load-time knobs (take effect on the next :func:`load_builtin`): ``image_*``,
    ``audio_*``. Ranges are ``(low, high)`` sampled uniformly per sample.

    Attributes:
        p_heavy: probability that one modality of a sample is heavily degraded (independently per
            modality, redrawn while all three are).
        text_light_typo_prob: probability of one character edit in a clean phrase.
        text_partial_share: share of heavy text that is an ambiguous phrase ("an odd digit below
            five"); the rest is a word with most characters garbled.
        text_partial_sizes: allowed sizes of the candidate set of an ambiguous phrase.
        text_heavy_typo_rate: fraction of characters garbled in a heavy-typo phrase.
        image_light_noise_std: Gaussian noise std in grey levels (0-255) on every image.
        image_max_shift: largest translation in pixels on every image.
        image_occlusion_size: side in pixels of the square block hiding part of the digit.
        image_heavy_noise_std: Gaussian noise std in grey levels for the ``noise`` kind.
        image_low_contrast: ink contrast kept by ``low_contrast`` (1 = unchanged).
        image_low_contrast_noise_std: noise std in grey levels added after lowering contrast.
        audio_light_snr_db: signal-to-noise ratio in dB of the white noise on every clip.
        audio_gain: gain applied to every clip.
        audio_max_shift_s: largest start offset in seconds (zeros padded in front).
        audio_speed: playback-speed factor applied by linear resampling (changes pitch too).
        audio_heavy_snr_db: SNR in dB for the ``noise`` kind.
        audio_clip_level: clipping threshold as a fraction of the peak for the ``clip`` kind.
        audio_clip_snr_db: SNR in dB of the noise added after clipping.
        audio_truncate_keep: fraction of the clip kept by ``truncate`` (start or end, random).
    """

    p_heavy: float = 0.3
    text_light_typo_prob: float = 0.15
    text_partial_share: float = 0.8
    text_partial_sizes: tuple[int, ...] = (2, 3, 4)
    text_heavy_typo_rate: float = 0.7
    image_light_noise_std: tuple[float, float] = (0.0, 20.0)
    image_max_shift: int = 2
    image_occlusion_size: tuple[int, int] = (16, 20)
    image_heavy_noise_std: tuple[float, float] = (180.0, 230.0)
    image_low_contrast: tuple[float, float] = (0.04, 0.08)
    image_low_contrast_noise_std: tuple[float, float] = (30.0, 40.0)
    audio_light_snr_db: tuple[float, float] = (10.0, 30.0)
    audio_gain: tuple[float, float] = (0.5, 1.2)
    audio_max_shift_s: float = 0.05
    audio_speed: tuple[float, float] = (0.92, 1.08)
    audio_heavy_snr_db: tuple[float, float] = (-14.0, -10.0)
    audio_clip_level: tuple[float, float] = (0.002, 0.01)
    audio_clip_snr_db: tuple[float, float] = (-4.0, 0.0)
    audio_truncate_keep: tuple[float, float] = (0.1, 0.22)


DEFAULT_PARAMS = DegradeParams()


def draw_heavy(rng: random.Random, params: DegradeParams = DEFAULT_PARAMS) -> dict[str, str]:
    """Draw which modalities of one sample are heavily degraded, and how.

    Each modality is heavy with probability ``params.p_heavy``; the draw is repeated while all
    three are heavy so at least one modality always stays usable.

    Returns:
        modality → kind, e.g. ``{"image": "occlude", "text": "partial"}``; empty when none.
    """
    while True:
        flags = [rng.random() < params.p_heavy for _ in range(3)]
        if not all(flags):
            break
    out: dict[str, str] = {}
    if flags[0]:
        out["image"] = rng.choice(IMAGE_HEAVY_KINDS)
    if flags[1]:
        out["text"] = "partial" if rng.random() < params.text_partial_share else "typos"
    if flags[2]:
        out["audio"] = rng.choice(AUDIO_HEAVY_KINDS)
    return out


def typo(text: str, rng: random.Random, rate: float | None = None) -> str:
    """Garble letters of ``text``: one edit when ``rate`` is None, else that fraction of letters.

    A single edit is a swap, drop, duplicate or substitution (the mistakes people make); a heavy
    rate replaces letters with ``*`` or random letters so only the length and a few letters survive.
    """
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if not letters:
        return text
    chars = list(text)
    if rate is None:
        i = rng.choice(letters)
        op = rng.choice(("swap", "drop", "dup", "sub"))
        if op == "swap" and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif op == "drop" and len(letters) > 2:
            del chars[i]
        elif op == "dup":
            chars.insert(i, chars[i])
        else:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
        return "".join(chars)
    n = max(1, round(rate * len(letters)))
    for i in rng.sample(letters, n):
        chars[i] = "*" if rng.random() < 0.5 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def degrade_image(
    image: np.ndarray, seed: int, heavy: str | None, params: DegradeParams = DEFAULT_PARAMS
) -> np.ndarray:
    """Apply the light (always) and heavy (``heavy`` kind, or None) image degradation.

    Deterministic in ``(image, seed, heavy, params)``.

    Shapes:
        image: uint8 ``[H, W]`` grey, ink bright on a dark background (MNIST convention).
        returns: uint8 ``[H, W]``, a new array.
    """
    rng = np.random.default_rng([seed, _IMAGE_SALT])
    x = image.astype(np.float32)
    h, w = x.shape
    dy, dx = (int(v) for v in rng.integers(-params.image_max_shift, params.image_max_shift + 1, size=2))
    x = _shift2d(x, dy, dx)
    if heavy == "occlude":
        s = int(rng.integers(params.image_occlusion_size[0], params.image_occlusion_size[1] + 1))
        # Centre the block within the middle of the frame so it always hides strokes, not margin.
        cy, cx = (int(v) for v in rng.integers(h // 2 - 4, h // 2 + 5, size=2))
        y0, x0 = max(0, cy - s // 2), max(0, cx - s // 2)
        x[y0 : y0 + s, x0 : x0 + s] = 0.0 if rng.random() < 0.5 else 255.0
    elif heavy == "erase_half":
        side = int(rng.integers(4))
        if side == 0:
            x[: h // 2] = 0.0
        elif side == 1:
            x[h // 2 :] = 0.0
        elif side == 2:
            x[:, : w // 2] = 0.0
        else:
            x[:, w // 2 :] = 0.0
    elif heavy == "noise":
        x = x + rng.normal(0.0, _u(rng, params.image_heavy_noise_std), size=x.shape)
    elif heavy == "low_contrast":
        c = _u(rng, params.image_low_contrast)
        # Keep the faint digit around mid-grey so clipping does not undo the noise.
        x = 110.0 + c * x + rng.normal(0.0, _u(rng, params.image_low_contrast_noise_std), size=x.shape)
    elif heavy is not None:
        raise ValueError(f"unknown image degradation {heavy!r}; expected one of {IMAGE_HEAVY_KINDS}")
    x = x + rng.normal(0.0, _u(rng, params.image_light_noise_std), size=x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _shift2d(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate by (dy, dx) pixels, filling with zeros (no wrap-around)."""
    out = np.zeros_like(x)
    h, w = x.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = x[ys, xs]
    return out


def _add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise at ``snr_db`` relative to the mean power of ``x``."""
    power = float(np.mean(x.astype(np.float64) ** 2)) + 1e-12
    std = np.sqrt(power / (10.0 ** (snr_db / 10.0)))
    return x + rng.normal(0.0, std, size=x.shape).astype(np.float32)


def degrade_audio(
    audio: np.ndarray,
    seed: int,
    heavy: str | None,
    params: DegradeParams = DEFAULT_PARAMS,
    sample_rate: int = 16000,
) -> np.ndarray:
    """Apply the light (always) and heavy (``heavy`` kind, or None) audio degradation.

    Light: speed change by linear resampling, gain, start offset, white noise at a high SNR.
    Heavy: ``noise`` (SNR around -14..-10 dB), ``clip`` (hard clipping plus noise) or ``truncate``
    (keep only the start or the end of the word). Deterministic in the arguments.

    Shapes:
        audio: float32 ``[N]`` mono in [-1, 1].
        returns: float32 ``[M]`` in [-1, 1] (M differs from N by the speed change and offset).
    """
    rng = np.random.default_rng([seed, _AUDIO_SALT])
    x = audio.astype(np.float32)
    speed = _u(rng, params.audio_speed)
    n_out = max(1, int(round(len(x) / speed)))
    x = np.interp(np.arange(n_out) * speed, np.arange(len(x)), x).astype(np.float32)
    if heavy == "truncate":
        keep = max(1, int(round(len(x) * _u(rng, params.audio_truncate_keep))))
        x = x[:keep] if rng.random() < 0.5 else x[len(x) - keep :]
    elif heavy == "clip":
        peak = float(np.max(np.abs(x))) + 1e-12
        level = _u(rng, params.audio_clip_level) * peak
        x = np.clip(x, -level, level) * (peak / level) * 0.5
        x = _add_noise(x, _u(rng, params.audio_clip_snr_db), rng)
    elif heavy == "noise":
        x = _add_noise(x, _u(rng, params.audio_heavy_snr_db), rng)
    elif heavy is not None:
        raise ValueError(f"unknown audio degradation {heavy!r}; expected one of {AUDIO_HEAVY_KINDS}")
    x = x * _u(rng, params.audio_gain)
    shift = int(rng.integers(0, int(params.audio_max_shift_s * sample_rate) + 1))
    x = np.concatenate([np.zeros(shift, np.float32), x])
    x = _add_noise(x, _u(rng, params.audio_light_snr_db), rng)
    return np.clip(x, -1.0, 1.0).astype(np.float32)
