"""Multimodal input mixup ("function matching"): per-modality mixing rules, the mixed loss, and the
guards that keep a mixed batch away from cached teacher outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmdistill.data.collate import collate
from mmdistill.distill.losses.logits import KDCELoss
from mmdistill.distill.mixup import mix_batch, permute_labels, sample_mix
from mmdistill.distill.strategies import build_strategy
from mmdistill.errors import ConfigError
from mmdistill.models.builders import build_model, model_spec

K = 5
MODS = ["image", "text", "audio"]


def _model(preset: str = "tiny", seed: int = 0):
    torch.manual_seed(seed)
    return build_model(model_spec(preset, modalities=MODS, num_classes=K, vocab_size=30, n_mels=8))


def _hand_batch() -> dict:
    return {
        "id": ["a", "b", "c"], "label": torch.tensor([0, 1, 2]),
        "image": torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2).clone(),
        "text": torch.tensor([[5, 6, 0], [7, 0, 0], [8, 9, 4]]),
        "audio": torch.arange(24.0).view(3, 2, 4),
        "lengths": {"text": torch.tensor([2, 1, 3]), "audio": torch.tensor([4, 2, 0])},
        "present": {"image": torch.tensor([True, True, False]), "text": torch.tensor([True, False, True]),
                    "audio": torch.tensor([True, True, False])},
    }


def test_mix_batch_follows_the_per_modality_rules() -> None:
    b = _hand_batch()
    m = mix_batch(b, torch.tensor([1, 2, 0]), 0.75)
    # Row 0 mixes with row 1 (both have an image), row 1's partner has none, row 2 has none itself.
    assert m["image"][:, 0, 0, 0].tolist() == [0.75 * 1 + 0.25 * 2, 2.0, 1.0]
    # Token ids are never interpolated: the dominant row's, or the partner's where only it has text.
    assert m["text"].tolist() == [[5, 6, 0], [8, 9, 4], [8, 9, 4]]
    assert m["lengths"]["text"].tolist() == [2, 3, 3]
    # Audio of different lengths mixes to the longer one; an absent clip takes the partner's.
    assert m["lengths"]["audio"].tolist() == [4, 2, 4]
    torch.testing.assert_close(m["audio"][0], 0.75 * b["audio"][0] + 0.25 * b["audio"][1])
    torch.testing.assert_close(m["audio"][1], b["audio"][1])
    torch.testing.assert_close(m["audio"][2], b["audio"][0])
    assert all(mask.all() for mask in m["present"].values())
    assert m["id"] == b["id"] and m["label"].tolist() == [0, 1, 2]  # row i keeps its id and label
    assert permute_labels(m, torch.tensor([1, 2, 0]))["label"].tolist() == [1, 2, 0]
    # The input batch is not modified.
    assert b["present"]["image"].tolist() == [True, True, False] and b["text"][1].tolist() == [7, 0, 0]


def test_identity_permutation_changes_nothing() -> None:
    b = _hand_batch()
    m = mix_batch(b, torch.arange(3), 0.6)
    for key in ("image", "text", "audio"):
        torch.testing.assert_close(m[key], b[key])
    assert m["lengths"]["audio"].tolist() == [4, 2, 0]
    assert m["present"]["text"].tolist() == [True, False, True]


def test_sample_mix_keeps_the_dominant_weight_and_rejects_bad_alpha() -> None:
    torch.manual_seed(0)
    draws = [sample_mix(6, 1.0) for _ in range(50)]
    assert all(0.5 <= lam <= 1.0 for _, lam in draws)
    assert all(sorted(perm.tolist()) == list(range(6)) for perm, _ in draws)
    assert len({round(lam, 6) for _, lam in draws}) > 40  # a fresh weight per batch
    with pytest.raises(ValueError, match="alpha must be > 0"):
        sample_mix(4, 0.0)


def _samples(n: int = 8) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"id": f"s{i}", "label": i % K, "image": torch.randn(1, 28, 28, generator=g),
             "text": torch.randint(1, 30, (5 + i % 3,), generator=g),
             "audio": torch.randn(8, 16, generator=g)}
            for i in range(n)]


def test_mixup_loss_is_the_label_mix_of_the_loss_on_the_mixed_batch() -> None:
    """L = lam * kd_ce(y_a) + (1 - lam) * kd_ce(y_b), student and teacher on the same mixed batch."""
    batch = collate(_samples())
    teacher = _model("student", seed=1)
    strategy = build_strategy("logit_kd", _model(), teachers={"teacher": teacher}, mixup=0.4,
                              terms=[{"name": "kd_ce", "kwargs": {"temperature": 2.0, "alpha": 0.7}}])
    strategy.train()
    torch.manual_seed(7)
    got = strategy(batch, compute_loss=True)
    torch.manual_seed(7)
    perm, lam = sample_mix(8, 0.4)
    assert lam < 1.0 and not torch.equal(perm, torch.arange(8))
    mixed = mix_batch(batch, perm, lam)
    out = strategy.student(mixed)
    with torch.no_grad():
        target = teacher(mixed).logits
    kd = KDCELoss(temperature=2.0, alpha=0.7)
    y_a, y_b = batch["label"], batch["label"][perm]
    expected = lam * kd(out.logits, target, y_a) + (1 - lam) * kd(out.logits, target, y_b)
    torch.testing.assert_close(got["loss"], expected)
    ce = lam * F.cross_entropy(out.logits, y_a) + (1 - lam) * F.cross_entropy(out.logits, y_b)
    torch.testing.assert_close(got["loss/ce"], ce.detach())
    # Not mixed in eval mode (validation) or without compute_loss.
    strategy.eval()
    torch.manual_seed(7)
    plain = strategy(batch, compute_loss=True)
    with torch.no_grad():
        expected_eval = kd(strategy.student(batch).logits, teacher(batch).logits, batch["label"])
    torch.testing.assert_close(plain["loss"], expected_eval)


def test_mixup_refuses_cached_teacher_outputs() -> None:
    teacher = _model("student", seed=1)
    with pytest.raises(ConfigError, match=r"distill\.mixup: mixed inputs need the teachers online"):
        build_strategy("logit_kd", _model(), teachers={"teacher": teacher}, caches={"teacher": object()},
                       mixup=1.0)
    with pytest.raises(ConfigError, match=r"distill\.mixup: must be >= 0"):
        build_strategy("logit_kd", _model(), teachers={"teacher": teacher}, mixup=-1.0)
    strategy = build_strategy("logit_kd", _model(), teachers={"teacher": teacher}, mixup=1.0)
    with pytest.raises(ConfigError, match="needs the teachers online on mixed inputs"):
        strategy.attach_caches({"teacher": object()})
    assert "mixup=1" in strategy.extra_repr()
