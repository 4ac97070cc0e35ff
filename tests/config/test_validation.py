"""Every-problem-at-once reporting and the semantic checks of mmdistill.config.validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmdistill.config.loading import config_from_dict
from mmdistill.config.validation import parse_config, semantic_problems
from mmdistill.errors import ConfigError


def _problems(data: dict, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, **kwargs)
    return info.value.problems


def test_every_schema_problem_is_reported_at_once() -> None:
    problems = _problems(
        {
            "device": "gpu",
            "data": {"batchsize": 32, "modalities": ["image", "image"], "limit": 2.5},
            "teacher": {"train": {"lr": -1, "epochs": "many"}},
            "eval": {"latency_batch_sizes": [1, 0]},
            "logging": 5,
        }
    )
    assert problems == [
        "device: must be one of 'cpu', 'cuda' or 'auto', got 'gpu'",
        "data.modalities: lists image more than once; list each modality once, got ['image', 'image']",
        "data.limit: must be a whole number, got 2.5",
        "data.batchsize: unknown key; did you mean 'batch_size'? valid keys: source, manifest, shards, "
        "stream, allow_outside_root, on_error, modalities, classes, tasks, task_weights, limit, batch_size, "
        "eval_batch_size, num_workers, image, audio, text",
        "teacher.train.epochs: must be an integer, got 'many'",
        "teacher.train.lr: must be > 0, got -1",
        "eval.latency_batch_sizes[1]: must be > 0, got 0",
        "logging: must be a mapping of keys to values, got 5",
    ]


def test_unknown_key_did_you_mean_in_nested_and_dict_valued_sections() -> None:
    problems = _problems({"teacher": {"encoders": {"image": {"name": "cnn", "kwarg": {}}}, "trian": {}}})
    prefix = "teacher.encoders.image.kwarg: unknown key; did you mean 'kwargs'?"
    assert any(p.startswith(prefix) for p in problems)
    assert any(p.startswith("teacher.trian: unknown key; did you mean 'train'?") for p in problems)


def test_unknown_top_level_key_without_close_match_lists_valid_keys() -> None:
    (problem,) = _problems({"zzz": 1})
    assert problem.startswith("zzz: unknown key; valid keys: name, seed,")


def test_missing_and_bad_dict_key_messages() -> None:
    problems = _problems({"student": {"encoders": {"video": {"name": "x"}, "text": {}}}})
    assert "student.encoders.video: key must be one of 'image', 'text' or 'audio', got 'video'" in problems
    assert "student.encoders.text.name: required key is missing; add it" in problems


def test_semantic_problems_are_collected_together(tmp_path: Path) -> None:
    problems = _problems(
        {
            "plugins": ["no_such_plugin_module_xyz"],
            "data": {"source": "manifest", "modalities": ["image", "text"], "tasks": ["label"],
                     "task_weights": {"parity": 2.0}},
            "teacher": {"checkpoint": "missing_ckpt", "modalities": ["image", "audio"]},
            "eval": {"latency_batch_sizes": []},
        },
        base_dir=tmp_path,
        check=True,
    )
    text = "\n".join(problems)
    assert "plugins[0]: cannot import 'no_such_plugin_module_xyz'" in text
    assert "data.manifest: required when data.source is 'manifest'" in text
    assert "data.tasks: 'label' is the primary task" in text
    assert "data.task_weights.parity: not a task of this run" in text
    assert "teacher.modalities: audio not in data.modalities (image, text)" in text
    assert f"teacher.checkpoint: checkpoint folder not found, got '{tmp_path / 'missing_ckpt'}'" in text
    assert "eval.latency_batch_sizes: must list at least one batch size" in text
    assert len(problems) == 7


def test_manifest_must_exist_and_builtin_tasks_are_checked(tmp_path: Path) -> None:
    problems = _problems({"data": {"source": "manifest", "manifest": "m.csv"}}, base_dir=tmp_path)
    assert problems == [
        f"data.manifest: file not found, got '{tmp_path / 'm.csv'}'; check the path (relative paths resolve "
        "against the config file's folder)"
    ]
    problems = _problems({"data": {"tasks": ["parit"], "classes": ["a", "b"]}})
    expected = (
        "data.tasks[0]: the built-in dataset has no task 'parit'; did you mean 'parity'? "
        "available: parity"
    )
    assert expected in problems
    assert any(p.startswith("data.classes: only used with data.source: manifest") for p in problems)


def test_checkpoint_folder_needs_both_files(tmp_path: Path) -> None:
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / "model.json").write_text(json.dumps({}))
    problems = _problems({"student": {"checkpoint": str(ckpt)}})
    assert problems == [
        f"student.checkpoint: checkpoint folder '{ckpt}' lacks model.safetensors; save it with mmdistill"
    ]


def test_audio_band_limits() -> None:
    problems = _problems({"data": {"audio": {"sample_rate": 8000, "f_max": 6000, "f_min": 7000}}})
    assert problems[0].startswith("data.audio.f_max: must be <= sample_rate / 2 = 4000 Hz, got 6000")
    assert problems[1] == "data.audio.f_min: must be < f_max (6000 Hz), got 7000"


def test_plugin_raising_at_import_is_a_problem(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mmd_test_bad_plugin.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = parse_config({"plugins": ["mmd_test_bad_plugin"]})
    assert semantic_problems(cfg, check_registries=False) == [
        "plugins[0]: importing 'mmd_test_bad_plugin' raised RuntimeError: boom"
    ]


def test_registry_names_kwargs_and_modalities_are_checked() -> None:
    pytest.importorskip("mmdistill.models.builders")
    problems = _problems(
        {
            "teacher": {"preset": "teachr", "encoders": {"image": {"name": "cnnn"}, "text": {"name": "cnn"}},
                        "fusion": {"name": "concat", "kwargs": {"dimm": 3}}},
            "baselines": {"preset": "nope"},
        }
    )
    text = "\n".join(problems)
    assert "teacher.preset: unknown preset 'teachr'; did you mean 'teacher'?" in text
    assert "teacher.encoders.image.name: unknown encoder 'cnnn'; did you mean 'cnn'?" in text
    assert "teacher.encoders.text.name: encoder 'cnn' reads image, not text" in text
    assert "teacher.fusion.kwargs.dimm: fusion 'concat' takes no argument 'dimm'; did you mean 'dim'?" in text
    assert "baselines.preset: unknown preset 'nope'" in text
