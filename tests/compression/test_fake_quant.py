"""Fake b-bit weight quantization against a numpy reference, per-branch application, the bit sweep."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import tiny_batch, tiny_model
from mmdistill.compression.fake_quant import (
    bit_sweep,
    choose_qat_bits,
    clip_mask,
    quantize_weight,
    quantize_weights_,
)
from mmdistill.compression.policy import PrecisionPolicy, weight_bits_size
from mmdistill.errors import ConfigError
from mmdistill.models.multimodal import MultimodalModel

VOCAB, MELS = 40, 8


def make_model(modalities: tuple[str, ...] = ("image", "text", "audio")) -> MultimodalModel:
    return tiny_model(modalities, vocab=VOCAB, mels=MELS)


def make_batch(batch: int = 6, seed: int = 0) -> dict[str, Any]:
    return tiny_batch(batch, seed=seed, vocab=VOCAB, mels=MELS)


def np_fake_quant(w: np.ndarray, bits: int, per_channel: bool, symmetric: bool) -> np.ndarray:
    """The seed formula written out in numpy (float32, the same operation order), group by group."""
    w = w.astype(np.float32)
    groups = [w[i] for i in range(w.shape[0])] if per_channel and w.ndim >= 2 else [w]
    out = []
    for g in groups:
        if symmetric:
            q_max = 2 ** (bits - 1) - 1
            s = np.float32(np.abs(g).max()) / np.float32(q_max)
            if s == 0:
                out.append(g.copy())
                continue
            q = np.clip(np.round(g / s), -q_max, q_max)
            out.append((q * s).astype(np.float32))
        else:
            q_max = 2**bits - 1
            lo, hi = np.float32(g.min()), np.float32(g.max())
            s = (hi - lo) / np.float32(q_max)
            if s == 0:
                out.append(g.copy())
                continue
            z = np.round(-lo / s)
            q = np.clip(np.round(g / s) + z, 0, q_max)
            out.append(((q - z) * s).astype(np.float32))
    return np.stack(out) if per_channel and w.ndim >= 2 else out[0]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_matches_numpy_reference(bits: int, per_channel: bool, symmetric: bool) -> None:
    g = torch.Generator().manual_seed(bits)
    # Rows on different scales and offsets, so per-channel and per-tensor grids really differ.
    w = torch.randn(6, 5, 3, generator=g) * torch.linspace(0.1, 3.0, 6).view(6, 1, 1) + 0.3
    got = quantize_weight(w, bits, per_channel=per_channel, symmetric=symmetric)
    ref = np_fake_quant(w.numpy(), bits, per_channel, symmetric)
    assert got.dtype == w.dtype and got.shape == w.shape
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-6)


def test_hand_computed_two_bit_grid() -> None:
    # [lo, hi] = [-1, 2], 2 bits: s = 1, z = 1, grid {-1, 0, 1, 2}.
    w = torch.tensor([-1.0, -0.4, 0.6, 1.49, 2.0])
    assert quantize_weight(w, 2, per_channel=False).tolist() == [-1.0, 0.0, 1.0, 1.0, 2.0]
    # Symmetric, 3 bits: s = 2 / 3, q in [-3, 3].
    w = torch.tensor([-2.0, -0.3, 0.4, 2.0])
    expected = torch.tensor([-3.0, 0.0, 1.0, 3.0]) * (2.0 / 3.0)
    torch.testing.assert_close(quantize_weight(w, 3, symmetric=True), expected)


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
@pytest.mark.parametrize("symmetric", [False, True])
def test_distinct_values_per_channel(bits: int, symmetric: bool) -> None:
    w = torch.randn(8, 200, generator=torch.Generator().manual_seed(1))
    q = quantize_weight(w, bits, per_channel=True, symmetric=symmetric)
    limit = 2**bits - 1 if symmetric else 2**bits
    for row in q:
        assert 2 <= row.unique().numel() <= limit


@pytest.mark.parametrize("symmetric", [False, True])
def test_error_decreases_with_bits(symmetric: bool) -> None:
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(2))
    errors = [float((quantize_weight(w, b, symmetric=symmetric) - w).pow(2).mean()) for b in range(2, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    # Uniform rounding error is about s^2 / 12: each extra bit divides the MSE by about 4.
    assert errors[0] / errors[-1] > 4**5


def test_constant_tensors_zero_rows_and_float_bits() -> None:
    # Last row on the grid: asymmetric 2-bit over [-1, 2] is {-1, 0, 1, 2}; symmetric is {-1, 0, 1}.
    on_grid = {False: [-1.0, 0.0, 2.0], True: [-1.0, 0.0, 1.0]}
    for symmetric in (False, True):
        w = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], on_grid[symmetric]])
        for per_channel in (False, True):
            q = quantize_weight(w[:2], 2, per_channel=per_channel, symmetric=symmetric)
            assert torch.isfinite(q).all()
        q = quantize_weight(w, 2, per_channel=True, symmetric=symmetric)
        assert torch.equal(q, w)  # constant rows (s = 0) come back unchanged, no NaN
    # The rounded zero point moves the asymmetric grid: [-1, 1] at 2 bits is {-4/3, -2/3, 0, 2/3}.
    q = quantize_weight(torch.tensor([-1.0, 0.0, 1.0]), 2, per_channel=False)
    torch.testing.assert_close(q, torch.tensor([-4.0, 0.0, 2.0]) / 3)
    assert quantize_weight(w, 32) is w and quantize_weight(w, 16) is w
    double = quantize_weight(w.double(), 3)
    assert double.dtype == torch.float64


@pytest.mark.parametrize("bad", [0, 1, 9, 12, 64, True, 4.0, "4"])
def test_bad_bits_name_the_value(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"bit width must be one of .*got"):
        quantize_weight(torch.ones(2, 2), bad)  # type: ignore[arg-type]


def test_clip_mask_marks_values_beyond_the_rounded_grid() -> None:
    # s = 1.4 / 3, z = round(0.857) = 1: the grid ends at 2 s = 0.933 < 1.0, so 1.0 is clipped.
    w = torch.tensor([-0.4, 0.0, 1.0])
    assert clip_mask(w, 2, per_channel=False).tolist() == [True, True, False]
    assert quantize_weight(w, 2, per_channel=False)[2] == pytest.approx(2 * 1.4 / 3)


def test_quantize_weights_touches_only_selected_branch_weights() -> None:
    model = make_model()
    batch = make_batch()
    fp32_logits = model(batch).logits
    before = copy.deepcopy(model.state_dict())
    count = quantize_weights_(model, PrecisionPolicy.from_dict({"text": 2}))
    # tiny text encoder: embedding, forward + backward LSTM (weight_ih, weight_hh each), projection.
    assert count == 6
    after = model.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        is_text_weight = key.startswith("encoders.text.") and ".weight" in key
        assert changed == is_text_weight, key
    assert after["encoders.text.fwd.0.weight_ih_l0"][0].unique().numel() <= 4
    assert torch.equal(after["encoders.text.fwd.0.bias_ih_l0"], before["encoders.text.fwd.0.bias_ih_l0"])
    # The LSTM computes with the quantized values (its cached flat weights see the in-place write):
    # same outputs as a fresh model loaded with the quantized state, and not the fp32 outputs.
    fresh = make_model()
    fresh.load_state_dict(after)
    logits = model(batch).logits
    torch.testing.assert_close(logits, fresh(batch).logits, rtol=0, atol=0)
    assert not torch.allclose(logits, fp32_logits, atol=1e-4)


def test_bit_sweep_rows_and_model_untouched() -> None:
    model = make_model()
    batch = make_batch(batch=16, seed=1)
    labels = model(batch).logits.argmax(-1)  # the fp32 model's predictions: fp32 accuracy = 1
    state = copy.deepcopy(model.state_dict())
    calls = []

    def agreement(m: nn.Module) -> float:
        calls.append(1)
        with torch.no_grad():
            return float((m(batch).logits.argmax(-1) == labels).float().mean())

    rows = bit_sweep(model, agreement, bits=(2, 8), branches=["image", "head"])
    assert len(calls) == 1 + 3 * 2 and len(rows) == 7
    assert [(r["branch"], r["bits"]) for r in rows] == [
        ("none", 32), ("image", 2), ("image", 8), ("head", 2), ("head", 8), ("all", 2), ("all", 8)]
    json.dumps(rows)  # JSON-ready
    base = rows[0]
    assert base["accuracy"] == 1.0 and base["drop"] == 0.0 and base["size_ratio"] == 1.0
    for r in rows[1:]:
        assert r["drop"] == pytest.approx(1.0 - r["accuracy"])
        policy = (PrecisionPolicy.uniform(r["bits"]) if r["branch"] == "all"
                  else PrecisionPolicy.from_dict({r["branch"]: r["bits"]}))
        assert r["size_bytes"] == weight_bits_size(model, policy) < base["size_bytes"]
    by = {(r["branch"], r["bits"]): r for r in rows}
    assert by[("all", 8)]["accuracy"] >= 0.9  # 8 bits barely moves a tiny model's predictions
    assert by[("all", 2)]["size_bytes"] < by[("all", 8)]["size_bytes"] < by[("image", 8)]["size_bytes"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    with pytest.raises(ConfigError, match="not in this model"):
        bit_sweep(make_model(modalities=("image",)), agreement, branches=["text"])


def test_choose_qat_bits_picks_the_widest_width_over_the_tolerance() -> None:
    rows = [{"branch": "none", "bits": 32, "drop": 0.0}, {"branch": "image", "bits": 6, "drop": 0.5},
            {"branch": "all", "bits": 2, "drop": 0.40}, {"branch": "all", "bits": 4, "drop": 0.03},
            {"branch": "all", "bits": 6, "drop": 0.004}, {"branch": "all", "bits": 8, "drop": 0.0}]
    assert choose_qat_bits(rows, 1.0) == 4  # 3 points at 4 bits > 1 point; 0.4 points at 6 bits is fine
    assert choose_qat_bits(rows, 0.1) == 6
    assert choose_qat_bits(rows, 50.0) is None  # PTQ is good enough everywhere: no QAT
