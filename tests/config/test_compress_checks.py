"""Tests for the ``compress:`` and ``export:`` config checks (mmdistill.config.compress_checks)."""

from __future__ import annotations

import pytest

from mmdistill.config import config_from_dict
from mmdistill.config.compress_checks import compress_source, compressed_names, known_students, qat_name
from mmdistill.errors import ConfigError

KD = {"students": {"kd": {}}}


def _problems(**sections) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(sections)
    return info.value.problems


def test_source_defaults_to_the_first_distilled_student_else_scratch() -> None:
    assert compress_source(config_from_dict({})) == "scratch"
    cfg = config_from_dict({"distill": {"students": {"kd": {}, "fkd": {"strategy": "feature_kd"}}}})
    assert compress_source(cfg) == "kd"
    assert compress_source(config_from_dict({"distill": KD, "compress": {"source": "scratch"}})) == "scratch"


def test_compressed_names_follow_the_enabled_steps() -> None:
    cfg = config_from_dict({"distill": KD, "compress": {
        "sparsity": {"enabled": True}, "qat": {"enabled": True, "bits": 4}}})
    assert compressed_names(cfg) == ["kd-pruned", "kd-sparse", "kd-qat4"]
    assert known_students(cfg) == ["scratch", "kd", "kd-pruned", "kd-sparse", "kd-qat4"]
    # bits chosen from the sweep: the QAT name is only known after the sweep, so it is not listed
    swept = config_from_dict({"compress": {"prune": {"enabled": False}, "qat": {"enabled": True}}})
    assert compressed_names(swept) == [] and qat_name("scratch", 3) == "scratch-qat3"


def test_unknown_source_gets_a_did_you_mean() -> None:
    (problem,) = _problems(distill=KD, compress={"source": "kdd"})
    assert problem.startswith("compress.source: no student named 'kdd' in this run; did you mean 'kd'?")
    assert "students: scratch, kd" in problem and "name 'scratch' or a distill.students entry" in problem


def test_source_is_not_checked_when_the_compress_stage_does_not_run() -> None:
    cfg = config_from_dict({"compress": {"source": "elsewhere"}, "stages": ["teacher", "evaluate"]})
    assert cfg.compress.source == "elsewhere"


def test_export_variants_must_name_students_of_the_run() -> None:
    (problem,) = _problems(distill=KD, export={"variants": ["student-kd", "kd-prunned", "kd-qat4"]})
    # index 1 only: the "student-" prefix is accepted, and a QAT name may come from the sweep
    assert problem.startswith("export.variants[1]: no student named 'kd-prunned' in this run; "
                              "did you mean 'kd-pruned'?")
    assert problem.endswith("students: scratch, kd, kd-pruned")


def test_qat_bits_from_the_sweep_needs_the_sweep() -> None:
    (problem,) = _problems(compress={"qat": {"enabled": True, "bits": None}, "sweep": {"enabled": False}})
    assert problem.startswith("compress.qat.bits: null picks the bit width from the sweep")
    assert "set compress.qat.bits (2-8) or compress.sweep.enabled=true" in problem
    # an explicit width, or the sweep switched on, is fine
    config_from_dict({"compress": {"qat": {"enabled": True, "bits": 4}, "sweep": {"enabled": False}}})
    config_from_dict({"compress": {"qat": {"enabled": True, "bits": None}}})


def test_every_compress_and_export_problem_is_reported_at_once() -> None:
    problems = _problems(
        data={"modalities": ["image", "text"]},
        compress={"prune": {"ratio": 0}, "qat": {"policy": {"imgae": 4}}, "sweep": {"branches": ["audio"]}},
        export={"latency": {"batch_sizes": []}},
    )
    keys = [p.split(":")[0] for p in problems]
    assert keys == ["compress.prune.ratio", "compress.qat.policy.imgae", "compress.sweep.branches",
                    "export.latency.batch_sizes"]
    assert "did you mean 'image'?" in problems[1]
    assert "the data has no modality 'audio'; modalities: image, text" in problems[2]


def test_schema_bounds_name_the_key() -> None:
    problems = _problems(compress={"qat": {"bits": 9}, "prune": {"ratio": 1.0}})
    assert any(p.startswith("compress.qat.bits") for p in problems)
    assert any(p.startswith("compress.prune.ratio") for p in problems)


def test_recovery_mixup_needs_an_online_teacher_and_is_passed_to_the_fine_tune() -> None:
    from mmdistill.recipes.compress import recovery_variant

    problems = _problems(distill={"cache": "on", **KD}, compress={"prune": {"recover": {"mixup": 1.0}}})
    start = "compress.prune.recover.mixup: mixed inputs are new every step"
    assert any(p.startswith(start) for p in problems)
    qat = _problems(distill={"cache": "on", **KD},
                    compress={"qat": {"enabled": True, "bits": 4, "recover": {"mixup": 0.5}}})
    assert any(p.startswith("compress.qat.recover.mixup:") for p in qat)
    # unused fine-tunes are not checked: no recovery epochs, QAT off
    config_from_dict({"distill": {"cache": "on", **KD},
                      "compress": {"prune": {"recover": {"epochs": 0, "mixup": 1.0}}}})
    with pytest.raises(ConfigError, match=r"compress.prune.recover.mixup"):
        config_from_dict({"compress": {"prune": {"recover": {"mixup": -1}}}})
    cfg = config_from_dict({"distill": KD, "compress": {"prune": {"recover": {"mixup": 0.8, "epochs": 6}}}})
    variant = recovery_variant(cfg.compress.prune.recover, cfg)
    assert variant.mixup == 0.8 and variant.train.epochs == 6 and variant.teachers == ["teacher"]
    assert recovery_variant(cfg.compress.qat.recover, cfg).mixup == 0.0
