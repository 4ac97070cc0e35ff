"""Schema defaults, ranges and unknown-key handling of mmdistill.config.schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mmdistill.config.schema import STAGES, Config, DataConfig, ModelConfig, TrainConfig


def test_defaults_match_the_documented_values() -> None:
    cfg = Config()
    assert (cfg.name, cfg.seed, cfg.output_dir, cfg.device, cfg.threads) == ("demo", 0, "runs", "cpu", None)
    assert cfg.stages == list(STAGES) == ["teacher", "baselines", "student", "distill", "compress", "export",
                                         "evaluate"]
    assert cfg.plugins == []
    d = cfg.data
    assert (d.source, d.manifest, d.on_error, d.allow_outside_root) == ("builtin", None, "raise", False)
    assert d.modalities == ["image", "text", "audio"]
    assert (d.batch_size, d.eval_batch_size, d.num_workers, d.limit) == (64, 256, 0, None)
    assert (d.image.size, d.image.channels, d.image.mean, d.image.std) == (28, 1, 0.5, 0.25)
    assert (d.audio.sample_rate, d.audio.n_fft, d.audio.hop_length, d.audio.n_mels) == (16000, 400, 160, 40)
    assert (d.audio.f_min, d.audio.f_max, d.audio.max_seconds) == (20.0, None, 1.0)
    assert (d.text.vocab_size, d.text.max_length, d.text.lowercase) == (2000, 32, True)
    assert cfg.teacher.preset == "teacher" and cfg.student.preset == "student"
    t = cfg.teacher.train
    assert (t.epochs, t.lr, t.weight_decay, t.warmup, t.patience, t.grad_clip, t.label_smoothing) == (
        10, 3e-3, 0.01, 0.05, 3, 1.0, 0.0,
    )
    assert cfg.baselines.unimodal and cfg.baselines.preset == "teacher"
    assert cfg.eval.latency_batch_sizes == [1, 64] and cfg.eval.latency_threads == 1
    assert (cfg.logging.level, cfg.logging.quiet, cfg.logging.tensorboard) == ("INFO", False, False)


def test_section_without_preset_keeps_its_own_default_preset() -> None:
    cfg = Config.model_validate({"teacher": {"train": {"epochs": 2}}, "student": {"modalities": ["image"]}})
    assert cfg.teacher.preset == "teacher" and cfg.teacher.train.epochs == 2
    assert cfg.student.preset == "student" and cfg.student.modalities == ["image"]


def test_unknown_keys_are_rejected_in_every_section() -> None:
    for bad in ({"nam": "x"}, {"data": {"batchsize": 3}}, {"teacher": {"train": {"epoch": 3}}},
                {"data": {"audio": {"nmels": 3}}}, {"eval": {"fast": True}}):
        with pytest.raises(ValidationError) as info:
            Config.model_validate(bad)
        assert info.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (TrainConfig, {"lr": 0}),
        (TrainConfig, {"epochs": 0}),
        (TrainConfig, {"warmup": 1.0}),
        (TrainConfig, {"label_smoothing": -0.1}),
        (TrainConfig, {"epochs": True}),  # YAML `true` is not a number, even though bool ⊂ int
        (DataConfig, {"modalities": []}),
        (DataConfig, {"modalities": ["image", "image"]}),
        (DataConfig, {"modalities": ["video"]}),
        (DataConfig, {"image": {"channels": 2}}),
        (DataConfig, {"num_workers": -1}),
        (ModelConfig, {"preset": "x", "encoders": {"video": {"name": "cnn"}}}),
    ],
)
def test_out_of_range_values_are_rejected(model: type, data: dict) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)


def test_yaml_style_strings_are_read_as_numbers() -> None:
    # PyYAML reads `3e-3` (no dot) as a string; the schema still takes it as the float 0.003.
    assert TrainConfig.model_validate({"lr": "3e-3"}).lr == pytest.approx(0.003)
