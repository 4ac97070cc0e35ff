"""Tests for mmdistill.distill.strategies: loss dicts, gradients, teacher isolation, cache, variants."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmdistill.data.batch import IGNORE_LABEL
from mmdistill.data.collate import collate
from mmdistill.distill.cache import TeacherCache
from mmdistill.distill.strategies import STRATEGIES, build_strategy
from mmdistill.distill.strategies.multi_teacher import confidence_weights, mixture_logits
from mmdistill.distill.strategies.teacher_free import virtual_teacher_logits
from mmdistill.errors import ConfigError
from mmdistill.models.builders import build_model, model_spec

K = 5
MODS = ["image", "text", "audio"]


def _model(preset: str = "tiny", mods: list[str] = MODS, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(model_spec(preset, modalities=mods, num_classes=K, vocab_size=30, n_mels=8))


def _samples(n: int = 8, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"id": f"s{i}", "label": i % K, "image": torch.randn(1, 28, 28, generator=g),
         "text": torch.randint(1, 30, (5 + i % 3,), generator=g), "audio": torch.randn(8, 16, generator=g)}
        for i in range(n)
    ]


@pytest.fixture()
def batch() -> dict:
    return collate(_samples())


def _strategy(name: str, **kw):
    teachers = kw.pop("teachers", {"teacher": _model("student", seed=1)})
    return build_strategy(name, _model(), teachers=teachers, **kw)


CASES = {
    "logit_kd": {},
    "feature_kd": {},
    "robust": {},
    "crossmodal": {"student_mods": ["image", "text"]},
    "multi_teacher": {"teachers": lambda: {"teacher": _model("student", seed=1),
                                           "baseline-image": _model("tiny", ["image"], seed=2)}},
    "teacher_free": {"teachers": lambda: {}},
}


def test_every_registered_strategy_has_a_case() -> None:
    assert set(STRATEGIES.names()) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_dict_keys_are_finite_and_gradients_reach_only_trainable_parts(name: str, batch: dict) -> None:
    case = CASES[name]
    teachers = case["teachers"]() if "teachers" in case else {"teacher": _model("student", seed=1)}
    student = _model(mods=case.get("student_mods", MODS))
    strategy = build_strategy(name, student, teachers=teachers)
    out = strategy(batch, compute_loss=True)
    assert out["logits"].shape == (8, K)
    expected_terms = {"loss/kd_ce", "loss/hint"} if name == "feature_kd" else {"loss/kd_ce"}
    assert set(out) == {"loss", "logits", "loss/ce"} | expected_terms
    assert all(torch.isfinite(v).all() for v in out.values())
    # kd_ce already holds the cross-entropy, so the separate CE term weighs 0 by default.
    assert strategy.ce_weight == 0.0
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for t in teachers.values():
        assert all(p.grad is None and not p.requires_grad for p in t.parameters())
        assert not t.training


def test_teachers_are_not_submodules_and_follow_to(batch: dict) -> None:
    teacher = _model("student", seed=1)
    strategy = _strategy("feature_kd", teachers={"teacher": teacher})
    keys = list(strategy.state_dict())
    assert keys and all(k.startswith(("student.", "losses.")) for k in keys)
    n_params = sum(p.numel() for p in strategy.parameters())
    adapter = sum(p.numel() for p in strategy.losses.parameters())
    assert adapter > 0  # the hint's adapter maps the student's 16-wide fused feature to the teacher's 64
    assert n_params == sum(p.numel() for p in strategy.student.parameters()) + adapter
    assert teacher not in list(strategy.modules())
    strategy.train()
    assert strategy.student.training and not teacher.training
    strategy.double()
    assert next(teacher.parameters()).dtype == torch.float64  # .to()/.double() move the teacher along


def test_adapter_receives_gradient(batch: dict) -> None:
    strategy = _strategy("feature_kd")
    strategy(batch, compute_loss=True)["loss"].backward()
    adapter_grads = [p.grad for p in strategy.losses["hint"].parameters()]
    assert adapter_grads and all(g is not None and g.abs().sum() > 0 for g in adapter_grads)


def test_plain_forward_is_the_student_output(batch: dict) -> None:
    strategy = _strategy("logit_kd").eval()
    torch.testing.assert_close(strategy(batch).logits, strategy.student(batch).logits)


def test_total_is_the_weighted_sum_of_terms(batch: dict) -> None:
    terms = [{"name": "kd", "weight": 0.5, "kwargs": {"temperature": 2.0}},
             {"name": "cosine", "weight": 2.0, "student_feature": "image.pooled", "teacher_feature": "fused"}]
    strategy = _strategy("feature_kd", terms=terms, ce_weight=0.3)
    out = strategy(batch, compute_loss=True)
    expected = 0.3 * out["loss/ce"] + 0.5 * out["loss/kd"] + 2.0 * out["loss/cosine"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    torch.testing.assert_close(out["loss/ce"], F.cross_entropy(out["logits"].detach(), batch["label"]))


def test_cache_gives_the_same_loss_as_the_online_teacher(tmp_path: Path) -> None:
    samples = _samples(12)
    teacher = _model("student", seed=1)
    online = build_strategy("feature_kd", _model(), teachers={"teacher": teacher})
    cached = build_strategy("feature_kd", copy.deepcopy(online.student), teachers={"teacher": teacher})
    assert cached.required_features() == {"teacher": ["fused"]}
    cache = TeacherCache.get_or_build(tmp_path, teacher, samples, features=["fused"], progress=False)
    cached.attach_caches({"teacher": cache})
    assert cached.teachers == {} and "cache" in cached.extra_repr()
    cached.losses.load_state_dict(online.losses.state_dict())
    batch = collate([samples[i] for i in (7, 2, 11, 0)])  # any order: the cache looks rows up by id
    a, b = online(batch, compute_loss=True), cached(batch, compute_loss=True)
    assert set(a) == set(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_robust_hides_modalities_from_the_student_only(batch: dict) -> None:
    seen: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}
    teacher = _model("student", seed=1)
    strategy = build_strategy("robust", _model(), teachers={"teacher": teacher}, modality_dropout=0.6)
    assert strategy.modality_dropout == 0.6
    strategy.student.register_forward_pre_hook(
        lambda m, args: seen["student"].append(torch.stack(list(args[0]["present"].values()))))
    teacher.register_forward_pre_hook(
        lambda m, args: seen["teacher"].append(torch.stack(list(args[0]["present"].values()))))
    torch.manual_seed(0)
    strategy.train()
    for _ in range(3):
        strategy(batch, compute_loss=True)
    student_present = torch.cat(seen["student"], dim=1)
    assert all(bool(p.all()) for p in seen["teacher"])  # the teacher always sees everything
    assert not bool(student_present.all())  # the student lost some modalities ...
    assert bool(student_present.any(dim=0).all())  # ... but every row kept at least one
    assert build_strategy("robust", _model(), teachers={"teacher": teacher}).modality_dropout == 0.3


def test_confidence_weights_sum_to_one_and_favour_the_confident_teacher() -> None:
    confident = torch.tensor([[8.0, 0, 0, 0, 0], [0, 0, 9.0, 0, 0]])
    unsure = torch.tensor([[0.1, 0, 0, 0, 0.2], [0, 0.3, 0, 0, 0]])
    w = confidence_weights([unsure, confident])
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    assert bool((w[:, 1] > w[:, 0]).all())
    # Reference: softmax over teachers of the negative entropy.
    neg_h = torch.stack([(F.softmax(z, -1) * F.log_softmax(z, -1)).sum(-1) for z in (unsure, confident)], 1)
    torch.testing.assert_close(w, torch.softmax(neg_h, 1))
    prior = torch.tensor([1.0, 0.0])  # a zero prior removes a teacher whatever its confidence
    torch.testing.assert_close(confidence_weights([unsure, confident], prior)[:, 1], torch.zeros(2))


def test_mixture_logits_soften_to_the_weighted_mixture() -> None:
    z1, z2 = torch.randn(4, K), torch.randn(4, K)
    w = torch.tensor([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    t = 3.0
    mix = mixture_logits([z1, z2], w, t)
    expected = w[:, :1] * F.softmax(z1 / t, -1) + w[:, 1:] * F.softmax(z2 / t, -1)
    assert torch.isfinite(mix).all()
    torch.testing.assert_close(F.softmax(mix / t, -1), expected)


def test_multi_teacher_ignores_a_specialist_whose_modality_is_absent(batch: dict) -> None:
    teachers = {"teacher": _model("student", seed=1), "baseline-audio": _model("tiny", ["audio"], seed=2)}
    strategy = build_strategy("multi_teacher", _model(), teachers=teachers, teacher_weighting="confidence")
    batch["present"]["audio"][:3] = False
    w = strategy.target_fn.weights(strategy.teacher_outputs(batch), batch)
    torch.testing.assert_close(w.sum(1), torch.ones(8))
    torch.testing.assert_close(w[:3, 1], torch.zeros(3))
    assert bool((w[3:, 1] > 0).all())


def test_teacher_free_targets_the_virtual_teacher_without_any_teacher(batch: dict) -> None:
    labels = torch.tensor([2, 0, IGNORE_LABEL])
    v = virtual_teacher_logits(labels, K, 0.9)
    torch.testing.assert_close(F.softmax(v[0], -1), torch.tensor([0.025, 0.025, 0.9, 0.025, 0.025]))
    torch.testing.assert_close(v[2], torch.zeros(K))
    strategy = build_strategy("teacher_free", _model(), teachers={})
    assert strategy.teacher_names == []
    batch["label"][:2] = IGNORE_LABEL
    out = strategy(batch, compute_loss=True)
    assert torch.isfinite(out["loss"])
    target = strategy.target_fn({}, batch, 4.0, out["logits"], batch)
    torch.testing.assert_close(target[:2], out["logits"][:2].detach())  # unlabelled rows: no signal
    with pytest.raises(ConfigError, match="uses no teacher"):
        build_strategy("teacher_free", _model(), teachers={"teacher": _model("student")})
    with pytest.raises(ConfigError, match="correct_prob"):
        build_strategy("teacher_free", _model(), correct_prob=0.1)


def test_strategy_errors_name_the_key_value_and_fix() -> None:
    t1, t2 = _model("student", seed=1), _model("student", seed=2)
    with pytest.raises(ConfigError, match=r"distill.students.x.teachers: .*exactly one "
                                          r"teacher.*multi_teacher"):
        build_strategy("logit_kd", _model(), teachers={"a": t1, "b": t2}, key="distill.students.x")
    with pytest.raises(ConfigError, match=r"modalities: .*strict subset.*image\+text\+audio"):
        build_strategy("crossmodal", _model(), teachers={"teacher": t1})
    with pytest.raises(ConfigError) as info:
        build_strategy("feature_kd", _model(), teachers={"teacher": t1},
                       terms=[{"name": "hint", "student_feature": "audio.pool"}])
    msg = str(info.value)
    assert "terms[0].student_feature" in msg and "'audio.pool'" in msg and "audio.pooled" in msg
    with pytest.raises(ConfigError, match="did you mean 'logit_kd'"):
        build_strategy("logit_k", _model(), teachers={"teacher": t1})
    with pytest.raises(ConfigError, match="temperature"):
        build_strategy("logit_kd", _model(), teachers={"teacher": t1},
                       terms=[{"name": "kd", "kwargs": {"temperature": 0}}])
    with pytest.raises(ConfigError, match="at least two teachers"):
        build_strategy("multi_teacher", _model(), teachers={"teacher": t1})


def test_ce_weight_defaults_to_one_without_kd_ce() -> None:
    strategy = _strategy("logit_kd", terms=[{"name": "kd"}])
    assert strategy.ce_weight == 1.0
    assert _strategy("logit_kd", terms=[{"name": "kd"}], ce_weight=0.25).ce_weight == 0.25
