"""Fusions: registry-wide smoke test, numerics against hand-written references, absent-row masking."""

from __future__ import annotations

import pytest
import torch

from mmdistill.models.fusion.attention import AttentionFusion
from mmdistill.models.fusion.concat import ConcatFusion, SumFusion
from mmdistill.models.fusion.gated import GatedFusion
from mmdistill.models.outputs import EncoderOutput
from mmdistill.models.registries import FUSIONS, register_all

register_all()
IN_DIMS = {"image": 5, "text": 3, "audio": 4}


def make_feats(batch: int = 6) -> tuple[dict[str, EncoderOutput], dict[str, torch.Tensor]]:
    feats = {m: EncoderOutput(pooled=torch.randn(batch, d)) for m, d in IN_DIMS.items()}
    present = {
        "image": torch.tensor([1, 1, 0, 0, 1, 0], dtype=torch.bool)[:batch],
        "text": torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool)[:batch],
        "audio": torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool)[:batch],  # row 5: nothing present
    }
    return feats, present


def test_builtin_fusions_registered() -> None:
    assert {"concat", "sum", "gated", "attention"} <= set(FUSIONS.names())


@pytest.mark.parametrize("name", FUSIONS.names())
def test_fusion_smoke_and_absent_rows_ignore_their_features(name: str) -> None:
    torch.manual_seed(0)
    fusion = FUSIONS.build(name, in_dims=IN_DIMS, dim=8).eval()
    feats, present = make_feats()
    out = fusion(feats, present)
    assert out.shape == (6, fusion.out_dim) and fusion.out_dim == 8
    assert torch.isfinite(out).all()
    # Replacing absent rows' features with garbage must not change anything.
    noisy = {
        m: EncoderOutput(pooled=torch.where(present[m][:, None], f.pooled, torch.full_like(f.pooled, 1e3)))
        for m, f in feats.items()
    }
    torch.testing.assert_close(fusion(noisy, present), out)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)


def test_concat_trusts_pooled_already_zeroed_by_the_model() -> None:
    """``zeroed_absent`` (set by MultimodalModel.encode) skips the second presence mask, which
    changes nothing for zeroed rows and is visible only for rows that were not zeroed."""
    torch.manual_seed(0)
    fusion = ConcatFusion(IN_DIMS, dim=4)
    feats, present = make_feats()
    zeroed = {
        m: EncoderOutput(pooled=f.pooled * present[m][:, None], zeroed_absent=True) for m, f in feats.items()
    }
    torch.testing.assert_close(fusion(zeroed, present), fusion(feats, present), rtol=0, atol=0)
    trusted = {m: EncoderOutput(pooled=f.pooled, zeroed_absent=True) for m, f in feats.items()}
    assert not torch.equal(fusion(trusted, present), fusion(feats, present))


def test_concat_matches_reference() -> None:
    fusion = ConcatFusion(IN_DIMS, dim=4)
    feats, present = make_feats()
    z = torch.cat([feats[m].pooled * present[m][:, None] for m in IN_DIMS], dim=1)
    expected = torch.relu(z @ fusion.proj.weight.T + fusion.proj.bias)
    torch.testing.assert_close(fusion(feats, present), expected)


def test_sum_averages_present_modalities_and_zeroes_empty_rows() -> None:
    fusion = SumFusion(IN_DIMS, dim=4)
    feats, present = make_feats()
    out = fusion(feats, present)
    for row in range(6):
        terms = [fusion.projs[m](feats[m].pooled[row]) for m in IN_DIMS if present[m][row]]
        expected = torch.relu(torch.stack(terms).mean(0)) if terms else torch.zeros(4)
        torch.testing.assert_close(out[row], expected)


def test_gated_weights_are_normalized_over_present_modalities() -> None:
    fusion = GatedFusion(IN_DIMS, dim=4)
    feats, present = make_feats()
    h, w = fusion.gate_weights(feats, present)
    mask = torch.stack([present[m] for m in IN_DIMS], dim=1)
    assert (w[~mask] == 0).all()
    sums = w.sum(1)
    torch.testing.assert_close(sums[mask.any(1)], torch.ones(int(mask.any(1).sum())))
    assert sums[5] == 0 and (fusion(feats, present)[5] == 0).all()
    torch.testing.assert_close(fusion(feats, present), torch.relu((h * w[..., None]).sum(1)))


def test_attention_all_absent_row_is_zero_without_nan() -> None:
    fusion = AttentionFusion(IN_DIMS, dim=8, heads=2)
    feats, present = make_feats()
    for f in feats.values():
        f.pooled.requires_grad_(True)
    out = fusion(feats, present)
    assert torch.isfinite(out).all() and (out[5] == 0).all()
    _, weights = fusion.attention_weights(feats, present)
    mask = torch.stack([present[m] for m in IN_DIMS], dim=1)
    assert (weights.permute(0, 2, 1)[~mask] == 0).all()
    torch.testing.assert_close(weights.sum(-1)[mask.any(1)], torch.ones(5, 2))
    out.sum().backward()
    assert all(torch.isfinite(f.pooled.grad).all() for f in feats.values())


def test_attention_single_modality_returns_its_value() -> None:
    """With one modality present the softmax is 1 on it: output = ReLU(out(value(token)))."""
    fusion = AttentionFusion({"image": 5, "text": 3}, dim=4, heads=2)
    feats = {"image": EncoderOutput(torch.randn(2, 5)), "text": EncoderOutput(torch.randn(2, 3))}
    present = {"image": torch.tensor([True, True]), "text": torch.tensor([False, False])}
    token = fusion.norm(fusion.projs["image"](feats["image"].pooled) + fusion.modality_embed[0])
    expected = torch.relu(fusion.out(fusion.value(token)))
    torch.testing.assert_close(fusion(feats, present), expected)


def test_bad_in_dims_and_heads() -> None:
    with pytest.raises(ValueError, match="in_dims"):
        ConcatFusion({}, dim=4)
    with pytest.raises(ValueError, match="multiple of heads"):
        AttentionFusion(IN_DIMS, dim=6, heads=4)
