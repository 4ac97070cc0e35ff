"""Tests for the ``distill:`` config section: schema and semantic checks (mmdistill.config.distill_checks)."""

from __future__ import annotations

import pytest

from mmdistill.config import config_from_dict
from mmdistill.config.distill_checks import (
    baseline_subsets,
    teacher_choices,
    teacher_modalities,
    variant_model_config,
    variant_teachers,
)
from mmdistill.errors import ConfigError


def _problems(distill: dict, **top) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"distill": distill, **top})
    return info.value.problems


def test_defaults_and_stage_order() -> None:
    cfg = config_from_dict({})
    assert cfg.stages == ["teacher", "baselines", "student", "distill", "compress", "export", "evaluate"]
    assert cfg.distill.cache == "auto" and cfg.distill.teachers == ["teacher"] and cfg.distill.students == {}


def test_variant_inherits_the_scratch_students_architecture_and_teachers() -> None:
    cfg = config_from_dict({
        "student": {"preset": "tiny", "modalities": ["image", "text"], "fusion": {"name": "gated"}},
        "distill": {"teachers": ["teacher"], "students": {
            "kd": {}, "big": {"preset": "student"}, "tf": {"strategy": "teacher_free"}}},
    })
    kd = variant_model_config(cfg, cfg.distill.students["kd"])
    assert (kd.preset, kd.modalities, kd.fusion.name) == ("tiny", ["image", "text"], "gated")
    big = variant_model_config(cfg, cfg.distill.students["big"])
    assert big.preset == "student" and big.fusion is None
    assert variant_teachers(cfg, cfg.distill.students["kd"]) == ["teacher"]
    assert variant_teachers(cfg, cfg.distill.students["tf"]) == []


def test_every_problem_is_reported_at_once_with_key_value_and_fix() -> None:
    problems = _problems({
        "teachers": ["teachr"],
        "students": {
            "scratch": {"strategy": "logit_kd"},
            "a": {"strategy": "logit_kdd"},
            "b": {"strategy": "multi_teacher", "teachers": ["teacher"],
                  "teacher_weights": {"baseline-text": 1}},
            "c": {"strategy": "logit_kd", "teachers": ["teacher"],
                  "terms": [{"name": "kd", "kwargs": {"temperature": -1}},
                            {"name": "hint", "student_feature": "audio.pool"},
                            {"name": "kd", "teacher_feature": "fused"},
                            {"name": "kd", "kwargs": {"temprature": 2}}]},
            "d": {"strategy": "crossmodal", "teachers": ["teacher"]},
            "e": {"strategy": "teacher_free", "teachers": ["teacher"], "kwargs": {"correct": 0.9}},
            "f": {"strategy": "logit_kd", "teachers": ["teacher"], "teacher_weighting": "confidence"},
        },
    })
    text = "\n".join(problems)
    expected = [
        "distill.teachers[0]: not a model of this run, got 'teachr'; did you mean 'teacher'?",
        "distill.students.scratch: a student name must be a folder name",
        "distill.students.a.strategy: unknown strategy 'logit_kdd'; did you mean 'logit_kd'?",
        "distill.students.b.teachers: strategy 'multi_teacher' needs at least two teachers",
        "distill.students.b.teacher_weights.baseline-text: not a teacher of this student",
        "distill.students.c.terms[0].kwargs: `temperature` must be > 0, got -1",
        "distill.students.c.terms[1].student_feature: the student has no feature 'audio.pool'; available: "
        "image.pooled, text.pooled, audio.pooled, fused",
        "distill.students.c.terms[2]: 'kd' compares logits; remove student_feature",
        "distill.students.c.terms[3]: loss 'kd' got unknown kwarg 'temprature'; did you mean 'temperature'?",
        "distill.students.d.modalities: strategy 'crossmodal' needs a strict subset of the teacher's "
        "modalities",
        "distill.students.e.teachers: strategy 'teacher_free' uses no teacher",
        "distill.students.e.kwargs.correct: strategy 'teacher_free' takes no option 'correct'; did you mean "
        "'correct_prob'?",
        "distill.students.f.teacher_weighting/teacher_weights: only used by strategy multi_teacher",
    ]
    for line in expected:
        assert line in text, f"missing: {line}\n---\n{text}"


def test_schema_rejects_unknown_keys_and_bad_ranges() -> None:
    problems = _problems({"cache": "maybe",
                          "students": {"kd": {"strategyy": "logit_kd", "modality_dropout": 1.0}}})
    text = "\n".join(problems)
    assert "distill.cache: must be one of 'auto', 'on' or 'off'" in text
    assert "distill.students.kd.strategyy: unknown key; did you mean 'strategy'?" in text
    assert "distill.students.kd.modality_dropout: must be < 1" in text


def test_feature_terms_check_the_named_teachers_features() -> None:
    problems = _problems({"students": {"x": {
        "strategy": "multi_teacher", "teachers": ["teacher", "baseline-audio"],
        "terms": [{"name": "kd_ce"},
                  {"name": "hint", "teacher": "baseline-audio", "teacher_feature": "image.pooled"},
                  {"name": "hint", "teacher": "baseline-text"}]}}})
    text = "\n".join(problems)
    assert ("terms[1].teacher_feature: the teacher has no feature 'image.pooled'; "
            "available: audio.pooled, fused") in text
    assert "terms[2].teacher: feature loss 'hint' needs one of this student's teachers, got 'baseline-text'" \
        in text


def test_valid_variants_pass() -> None:
    cfg = config_from_dict({"distill": {"students": {
        "kd": {"strategy": "logit_kd"},
        "cm": {"strategy": "crossmodal", "modalities": ["image"],
               "terms": [{"name": "kd_ce"}, {"name": "contrastive", "student_feature": "image.pooled"}]},
        "mt": {"strategy": "multi_teacher", "teachers": ["teacher", "baseline-image"],
               "teacher_weighting": "confidence", "teacher_weights": {"teacher": 2}},
        "tf": {"strategy": "teacher_free", "kwargs": {"correct_prob": 0.95}},
    }}})
    assert list(cfg.distill.students) == ["kd", "cm", "mt", "tf"]


def test_mixup_needs_an_online_mmdistill_teacher() -> None:
    problems = _problems({"cache": "on", "students": {
        "fm": {"mixup": 1.0}, "tf": {"strategy": "teacher_free", "mixup": 0.5}}})
    text = "\n".join(problems)
    assert "distill.students.fm.mixup: mixed inputs are new every step" in text
    assert "distill.cache is 'on'" in text
    assert "students.tf.mixup: strategy 'teacher_free' has no teacher to match on mixed inputs" in text
    external = _problems({"students": {"fm": {"mixup": 1.0}}},
                         teacher={"external": {"kind": "onnx", "path": "t.onnx"}})
    assert any("fm.mixup: the teacher reads raw records (teacher.external)" in p for p in external)
    with pytest.raises(ConfigError, match=r"distill.students.fm.mixup"):
        config_from_dict({"distill": {"students": {"fm": {"mixup": -0.5}}}})
    cfg = config_from_dict({"distill": {"students": {"fm": {"mixup": 0.4}, "kd": {}}}})
    assert cfg.distill.students["fm"].mixup == 0.4 and cfg.distill.students["kd"].mixup == 0.0


def test_baseline_subsets_are_named_in_data_order_and_can_teach() -> None:
    cfg = config_from_dict({
        "baselines": {"subsets": [["audio", "image"], ["text", "image"]]},
        "distill": {"students": {"r": {
            "strategy": "multi_teacher", "teacher_weighting": "routed",
            "teachers": ["teacher", "baseline-image+audio", "baseline-image+text", "baseline-text"]}}},
    })
    assert baseline_subsets(cfg) == {"image+audio": ["image", "audio"], "image+text": ["image", "text"]}
    assert teacher_choices(cfg)[-2:] == ["baseline-image+audio", "baseline-image+text"]
    assert teacher_modalities(cfg, "baseline-image+audio") == ["image", "audio"]
    assert teacher_modalities(cfg, "baseline-text") == ["text"]


def test_bad_baseline_subsets_and_a_routed_student_without_specialists_are_reported() -> None:
    for subsets, message in (([["image"]], "a subset lists at least two modalities"),
                             ([["image", "text"], ["text", "image"]], "the same subset is listed twice"),
                             ([["image", "image"]], "lists image more than once")):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"baselines": {"subsets": subsets}})
    problems = _problems({"students": {
        "r": {"strategy": "multi_teacher", "teacher_weighting": "routed",
              "teachers": ["teacher", "baseline-image+text"]},
        "s": {"strategy": "multi_teacher", "teacher_weighting": "routed"}}},
        data={"source": "builtin", "modalities": ["image", "audio"]},
        baselines={"subsets": [["image", "text"]]})
    text = "\n".join(problems)
    assert "baselines.subsets[0]: ['image', 'text'] names text, which the data does not have" in text
    # image+text does not fit an image+audio student: routing would never pick it.
    assert ("distill.students.r.teacher_weighting: 'routed' teaches a row whose student sees fewer "
            "modalities by a teacher of just those, but no teacher of ['teacher', 'baseline-image+text'] "
            "reads fewer than the student (image+audio); add specialists") in text
    assert "distill.students.s.teachers: strategy 'multi_teacher' needs at least two teachers" in text
    assert "distill.students.s.teacher_weighting: 'routed'" in text
    cfg = config_from_dict({"baselines": {"subsets": [["image", "audio"]]}, "distill": {"students": {"r": {
        "strategy": "multi_teacher", "teacher_weighting": "routed", "modalities": ["image", "audio"],
        "teachers": ["teacher", "baseline-image"]}}}})
    assert cfg.distill.students["r"].teacher_weighting == "routed"  # image < image+audio: it can route
