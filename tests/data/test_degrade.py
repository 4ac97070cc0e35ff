"""Tests for the mmdigits degradations: determinism, strength and shapes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mmdistill.data.datasets.degrade import (
    AUDIO_HEAVY_KINDS,
    IMAGE_HEAVY_KINDS,
    DegradeParams,
    degrade_audio,
    degrade_image,
    draw_heavy,
    typo,
)


def _digit() -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:16] = 255  # a "1": a bright vertical bar
    return img


def _tone(n: int = 8000) -> np.ndarray:
    t = np.arange(n) / 16000
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.parametrize("kind", [None, *IMAGE_HEAVY_KINDS])
def test_image_degradation_is_deterministic_and_keeps_dtype(kind: str | None) -> None:
    a = degrade_image(_digit(), 7, kind)
    b = degrade_image(_digit(), 7, kind)
    assert a.dtype == np.uint8 and a.shape == (28, 28)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, degrade_image(_digit(), 8, kind))


def test_heavy_image_degradation_changes_much_more_than_light() -> None:
    blob = np.zeros((28, 28), np.uint8)
    blob[6:22, 6:22] = 255
    no_shift = DegradeParams(image_max_shift=0)

    def change(kind: str | None) -> float:
        return float(np.mean([np.abs(degrade_image(blob, s, kind, no_shift).astype(np.float32) - blob).mean()
                              for s in range(20)]))

    light = change(None)
    assert 0 < light < 10  # mild noise only: mean change under 10 grey levels
    for kind in IMAGE_HEAVY_KINDS:
        assert change(kind) > 2 * light, kind


def test_no_shift_no_noise_params_leave_image_unchanged() -> None:
    params = DegradeParams(image_light_noise_std=(0.0, 0.0), image_max_shift=0)
    np.testing.assert_array_equal(degrade_image(_digit(), 3, None, params), _digit())


@pytest.mark.parametrize("kind", [None, *AUDIO_HEAVY_KINDS])
def test_audio_degradation_is_deterministic_and_bounded(kind: str | None) -> None:
    a = degrade_audio(_tone(), 5, kind)
    np.testing.assert_array_equal(a, degrade_audio(_tone(), 5, kind))
    assert a.dtype == np.float32 and a.ndim == 1
    assert np.abs(a).max() <= 1.0


def test_heavy_audio_noise_lowers_snr() -> None:
    # With speed, gain and shift fixed, the residual against the clean tone measures the noise.
    fixed = DegradeParams(audio_speed=(1.0, 1.0), audio_gain=(1.0, 1.0), audio_max_shift_s=0.0,
                          audio_light_snr_db=(20.0, 20.0), audio_heavy_snr_db=(-5.0, -5.0))
    clean = _tone()
    for kind, lo, hi in ((None, 15.0, 25.0), ("noise", -7.0, -3.0)):
        x = degrade_audio(clean, 1, kind, fixed)
        snr = 10 * np.log10(np.mean(clean**2) / np.mean((x - clean) ** 2))
        assert lo < snr < hi, (kind, snr)


def test_truncate_keeps_a_short_part() -> None:
    fixed = DegradeParams(audio_speed=(1.0, 1.0), audio_max_shift_s=0.0, audio_truncate_keep=(0.25, 0.25))
    assert len(degrade_audio(_tone(8000), 2, "truncate", fixed)) == 2000


def test_speed_change_resamples_length() -> None:
    fixed = DegradeParams(audio_speed=(2.0, 2.0), audio_max_shift_s=0.0)
    assert len(degrade_audio(_tone(8000), 0, None, fixed)) == 4000


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown image degradation"):
        degrade_image(_digit(), 0, "blur")
    with pytest.raises(ValueError, match="unknown audio degradation"):
        degrade_audio(_tone(), 0, "reverb")


def test_draw_heavy_never_degrades_all_three_and_matches_p() -> None:
    rng = random.Random(0)
    draws = [draw_heavy(rng, DegradeParams(p_heavy=0.3)) for _ in range(4000)]
    assert all(len(d) < 3 for d in draws)
    # P(heavy | not all three) = (p - p^3) / (1 - p^3) = 0.2804 for p = 0.3.
    rate = np.mean([("image" in d) for d in draws])
    assert abs(rate - 0.2804) < 0.025
    assert draw_heavy(random.Random(0), DegradeParams(p_heavy=0.0)) == {}


def test_typo_light_and_heavy() -> None:
    one = typo("seven", random.Random(1))
    assert one != "seven" and abs(len(one) - 5) <= 1
    heavy = typo("seven", random.Random(1), rate=0.8)
    assert len(heavy) == 5 and sum(a != b for a, b in zip(heavy, "seven", strict=True)) >= 3
    assert typo("3+4", random.Random(0)) == "3+4"  # no letters → unchanged
