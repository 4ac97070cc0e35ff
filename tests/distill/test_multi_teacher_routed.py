"""Tests for the ``routed`` weighting of ``multi_teacher``: each row taught by the teacher of its view."""

from __future__ import annotations

import pytest
import torch

from mmdistill.data.collate import collate
from mmdistill.distill.strategies import build_strategy
from mmdistill.distill.strategies.base import DistillStrategy
from mmdistill.distill.strategies.multi_teacher import routed_weights, visible
from mmdistill.models.builders import build_model, model_spec

K = 5
MODS = ["image", "text", "audio"]


def _model(mods: list[str] = MODS, seed: int = 0, preset: str = "tiny"):
    torch.manual_seed(seed)
    return build_model(model_spec(preset, modalities=mods, num_classes=K, vocab_size=30, n_mels=8))


def _batch(n: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    return collate([
        {"id": f"s{i}", "label": i % K, "image": torch.randn(1, 28, 28, generator=g),
         "text": torch.randint(1, 30, (5,), generator=g), "audio": torch.randn(8, 16, generator=g)}
        for i in range(n)
    ])


def _view(batch: dict, rows: list[tuple[bool, bool, bool]]) -> dict:
    """``batch`` with presence masks ``rows`` (image, text, audio per row)."""
    mask = torch.tensor(rows, dtype=torch.bool)
    return {**batch, "present": {m: mask[:, j] for j, m in enumerate(MODS)}}


def test_routed_weights_pick_the_largest_teachers_inside_the_visible_modalities() -> None:
    teachers = [MODS, ["image", "text"], ["image", "audio"], ["text", "audio"], ["image"]]
    seen = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0, 0], [0, 1, 0]], dtype=torch.bool)
    prior = torch.ones(5) / 5
    w, routed = routed_weights(teachers, seen, MODS, prior)
    expected = torch.zeros(6, 5)
    for row, teacher in enumerate([0, 1, 2, 3, 4]):
        expected[row, teacher] = 1.0
    torch.testing.assert_close(w, expected)  # row 5 sees only text: no teacher fits, not routed
    assert routed.tolist() == [True, True, True, True, True, False]


def test_routed_weights_split_ties_by_the_prior_and_skip_zero_weight_teachers() -> None:
    teachers = [["image", "text"], ["image", "text"], ["image"]]
    seen = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    w, routed = routed_weights(teachers, seen, MODS, torch.tensor([3.0, 1.0, 1.0]))
    torch.testing.assert_close(w, torch.tensor([[0.75, 0.25, 0.0]]))
    w, routed = routed_weights(teachers, seen, MODS, torch.tensor([0.0, 0.0, 1.0]))
    # The largest fitting teachers weigh 0: the row is not routed (it falls back to fixed weights).
    assert not bool(routed[0]) and float(w.sum()) == 0.0


def test_visible_reads_the_presence_masks_and_treats_absent_keys_as_hidden() -> None:
    batch = _view(_batch(2), [(True, False, True), (False, True, True)])
    del batch["audio"]
    seen = visible(batch, MODS, 2, torch.device("cpu"))
    assert seen.tolist() == [[True, False, False], [False, True, False]]


def _routed(**kw) -> DistillStrategy:
    teachers = {"teacher": _model(seed=1), "baseline-image+text": _model(["image", "text"], seed=2),
                "baseline-text+audio": _model(["text", "audio"], seed=3)}
    return build_strategy("multi_teacher", _model(), teachers=teachers, teacher_weighting="routed", **kw)


def test_routed_mixture_follows_the_students_view_not_the_teachers_batch() -> None:
    strategy = _routed()
    batch = _batch()
    outputs = strategy.teacher_outputs(batch)
    student_view = _view(batch, [(1, 1, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1), (1, 0, 0), (1, 1, 0)])
    w = strategy.target_fn.weights(outputs, batch, student_view)
    fixed = torch.full((3,), 1 / 3)
    expected = torch.stack([torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([0, 0, 1.0]),
                            fixed, fixed, torch.tensor([0, 1.0, 0])])
    torch.testing.assert_close(w, expected)  # rows 3, 4: no teacher reads only image(+audio)
    target = strategy.target_fn(outputs, batch, 4.0, torch.zeros(6, K), student_view)
    specialist = outputs["baseline-image+text"]["logits"][1]
    torch.testing.assert_close(target[1], 4.0 * torch.log_softmax(specialist / 4.0, dim=-1))
    # Without a student view the teachers' batch is the view: every row sees everything.
    torch.testing.assert_close(strategy.target_fn.weights(outputs, batch)[:, 0], torch.ones(6))


def test_the_strategy_hands_the_target_the_view_its_student_was_trained_on(monkeypatch) -> None:
    strategy = _routed(modality_dropout=0.5)
    strategy.train()
    seen: dict = {}
    student_forward = strategy.student.forward

    def spy_student(b, *a, **k):
        seen["student"] = {m: v.clone() for m, v in b["present"].items()}
        return student_forward(b, *a, **k)

    target_fn = strategy.target_fn

    def spy_target(outputs, batch, t, logits, student_batch):
        seen["target"] = {m: v.clone() for m, v in student_batch["present"].items()}
        seen["teacher"] = {m: v.clone() for m, v in batch["present"].items()}
        return target_fn(outputs, batch, t, logits, student_batch)

    monkeypatch.setattr(strategy.student, "forward", spy_student)
    strategy.target_fn = spy_target
    torch.manual_seed(0)
    out = strategy(_batch(32), compute_loss=True)
    assert torch.isfinite(out["loss"])
    for m in MODS:
        assert torch.equal(seen["target"][m], seen["student"][m])
        assert bool(seen["teacher"][m].all())  # the teachers saw the whole batch
    assert not all(bool(seen["student"][m].all()) for m in MODS)  # dropout did hide something


def test_an_unknown_weighting_is_refused_with_the_choices() -> None:
    from mmdistill.errors import ConfigError

    choices = r"teacher_weighting: must be one of \['fixed', 'confidence', 'routed'\]"
    with pytest.raises(ConfigError, match=choices):
        build_strategy("multi_teacher", _model(), teachers={"a": _model(seed=1), "b": _model(seed=2)},
                       teacher_weighting="nearest")
