"""Unstructured magnitude pruning: measured sparsity, smallest weights zeroed, plain tensors that save."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from _helpers import tiny_model
from mmdistill.compression.sparsity import prune_unstructured_
from mmdistill.errors import ConfigError
from mmdistill.models.checkpoint import load_model, save_model
from mmdistill.models.multimodal import MultimodalModel

VOCAB, MELS = 40, 16


def make_model(**kw: Any) -> MultimodalModel:
    return tiny_model(vocab=VOCAB, mels=MELS, **kw)


def make_batch(batch: int = 4) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([8, 3, 5, 1])[:batch]
    pad = torch.arange(8)[None] >= lengths[:, None]
    text = torch.randint(1, VOCAB, (batch, 8), generator=g).masked_fill(pad, 0)
    return {
        "label": torch.zeros(batch, dtype=torch.long),
        "image": torch.randn(batch, 1, 12, 12, generator=g),
        "text": text,
        "audio": torch.randn(batch, MELS, 20, generator=g),
        "lengths": {"text": lengths, "audio": torch.full((batch,), 20)},
        "present": {m: torch.ones(batch, dtype=torch.bool) for m in ("image", "text", "audio")},
    }


def weights(model: MultimodalModel) -> dict[str, torch.Tensor]:
    """The tensors prune_unstructured_ touches: conv/linear/embedding/RNN weight matrices."""
    return {k: v for k, v in model.state_dict().items()
            if k.endswith(".weight") and v.dim() >= 2 or ".weight_" in k}


@pytest.mark.parametrize("sparsity", [0.3, 0.75])
def test_global_sparsity_is_exact_and_removes_the_smallest(sparsity: float) -> None:
    model = make_model()
    before = {k: v.clone() for k, v in weights(model).items()}
    report = prune_unstructured_(model, sparsity=sparsity, scope="global")
    total = sum(v.numel() for v in before.values())
    assert report.pruned_elements == total and set(report.tensors) == set(before)
    zeros = sum(int((v == 0).sum()) for v in weights(model).values())
    assert zeros == round(sparsity * total) and abs(report.overall - sparsity) <= 1 / total
    # One global threshold: every zeroed weight was at most as large as every kept one.
    old = torch.cat([v.flatten() for v in before.values()]).abs()
    new = torch.cat([v.flatten() for v in weights(model).values()])
    assert old[new == 0].max() <= old[new != 0].min()
    assert torch.equal(new[new != 0], torch.cat([v.flatten() for v in before.values()])[new != 0])
    per_branch = {b: report.branches[b] for b in ("image", "text", "audio", "fusion", "head")}
    assert all(0 <= s <= 1 for s in per_branch.values())
    assert report.speedup is None and "no speed or size change" in report.note
    assert json.loads(json.dumps(report.to_dict()))["speedup"] is None


def test_layer_scope_gives_each_tensor_the_target() -> None:
    model = make_model()
    report = prune_unstructured_(model, sparsity=0.5, scope="layer")
    for name, w in weights(model).items():
        assert int((w == 0).sum()) == round(0.5 * w.numel()), name
        assert report.tensors[name] == pytest.approx(round(0.5 * w.numel()) / w.numel())


def test_outputs_change_and_save_load_gives_the_same_numbers(tmp_path: Path) -> None:
    model, batch = make_model(), make_batch()
    with torch.no_grad():
        dense = model(batch).logits
    prune_unstructured_(model, sparsity=0.6)
    assert not any("_orig" in k or "_mask" in k for k in model.state_dict())
    assert all(not m._forward_pre_hooks for m in model.modules())
    save_model(model, tmp_path / "sparse")
    loaded, _ = load_model(tmp_path / "sparse")
    with torch.no_grad():
        sparse = model(batch).logits
        # Fresh LSTMs in the loaded model: equal outputs prove the in-memory LSTMs use the zeroed weights.
        torch.testing.assert_close(loaded(batch).logits, sparse, atol=1e-6, rtol=0)
    assert (sparse - dense).abs().max() > 1e-4


def test_branches_limit_what_is_pruned() -> None:
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = prune_unstructured_(model, sparsity=0.5, branches=["image"])
    assert set(report.branches) == {"image"} and report.branches["image"] == pytest.approx(0.5, abs=0.01)
    for k, v in model.state_dict().items():
        if not k.startswith("encoders.image."):
            assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"sparsity": 1.0}, r"sparsity: must be a number in \[0, 1\)"),
     ({"sparsity": 0.5, "scope": "local"}, r"scope: must be 'global'"),
     ({"sparsity": 0.5, "branches": ["imgae"]}, r"unknown branch 'imgae'.*did you mean 'image'"),
     ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prune_unstructured_(make_model(), **kwargs)
