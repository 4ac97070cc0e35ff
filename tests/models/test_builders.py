"""Builders: presets and their sizes, spec merging, JSON round trip, validation errors."""

from __future__ import annotations

import json

import pytest
import torch

from mmdistill.errors import ConfigError
from mmdistill.models.builders import PRESETS, SPEC_FORMAT, build_model, model_spec
from mmdistill.models.checkpoint import count_parameters
from mmdistill.models.registries import ENCODERS, FUSIONS

ALL = ["image", "text", "audio"]


def spec(preset: str = "tiny", **kw: object) -> dict:
    return model_spec(preset, modalities=kw.pop("modalities", ALL), num_classes=10, vocab_size=2000, **kw)


def test_preset_sizes() -> None:
    counts = {p: count_parameters(build_model(spec(p))) for p in PRESETS}
    assert 1_500_000 <= counts["teacher"] <= 3_000_000
    assert 40_000 <= counts["student"] <= 100_000
    assert counts["teacher"] / counts["student"] >= 25
    assert counts["tiny"] < counts["student"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_component_of_every_preset_builds(preset: str) -> None:
    """Every built-in encoder and fusion builds in every preset, at the preset's size where it has one.

    The ``mlp`` image encoder has no preset size (its width follows the image size and ``hidden``).
    """
    for name in ENCODERS.names():
        if ENCODERS.entry(name).meta.get("input") in ("embedding", "pretrained"):
            continue  # a pretrained teacher's head encoders (mmdistill.teachers.head), registered on import
        modality = ENCODERS.entry(name).meta["modality"]
        model = build_model(spec(preset, modalities=[modality], encoders={modality: {"name": name}}))
        preset_kwargs = PRESETS[preset]["encoder_kwargs"].get(name)
        assert preset_kwargs is not None or name == "mlp", f"preset {preset} has no kwargs for {name}"
        encoder = model.encoders[modality]
        expected = preset_kwargs["out_dim"] if preset_kwargs else encoder.net[-3].out_features  # last Linear
        assert encoder.out_dim == expected
    for name in FUSIONS.names():
        assert build_model(spec(preset, fusion={"name": name})).fusion.out_dim > 0


def test_spec_is_json_and_rebuilds_identically() -> None:
    s = spec("student")
    assert json.loads(json.dumps(s)) == s
    assert s["format"] == SPEC_FORMAT and s["modalities"] == ALL and s["tasks"] is None
    assert s["encoders"]["text"]["kwargs"]["vocab_size"] == 2000
    assert s["encoders"]["image"]["kwargs"]["in_channels"] == 1
    assert s["encoders"]["audio"]["kwargs"]["n_mels"] == 40
    torch.manual_seed(0)
    a = build_model(s)
    b = build_model(json.loads(json.dumps(s)))
    assert a.spec == s and [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]


def test_overrides_merge_over_the_preset() -> None:
    s = spec("student", modalities=["audio", "image"], encoders={"image": {"kwargs": {"channels": [8, 8]}}},
             fusion={"name": "attention"}, head={"kwargs": {"dropout": 0.3}})
    assert s["modalities"] == ["image", "audio"]  # canonical order
    image = s["encoders"]["image"]["kwargs"]
    assert image["channels"] == [8, 8]
    assert image["out_dim"] == PRESETS["student"]["encoder_kwargs"]["cnn"]["out_dim"]
    assert s["fusion"] == {"name": "attention", "kwargs": PRESETS["student"]["fusion_kwargs"]["attention"]}
    assert s["head"] == {"name": "linear", "kwargs": {"dropout": 0.3}}
    t = spec("student", encoders={"text": {"name": "transformer"}})
    expected = {**PRESETS["student"]["encoder_kwargs"]["transformer"], "vocab_size": 2000}
    assert t["encoders"]["text"]["kwargs"] == expected


def test_tasks_make_a_multitask_head() -> None:
    s = spec("tiny", tasks={"speaker": 5})
    assert s["tasks"] == {"label": 10, "speaker": 5} and s["head"]["name"] == "multitask"
    assert build_model(s).head.tasks == {"label": 10, "speaker": 5}
    with pytest.raises(ConfigError, match="primary task has 10 classes"):
        spec("tiny", tasks={"label": 3})


def test_unknown_names_get_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="unknown model preset 'studnet'; did you mean 'student'"):
        spec("studnet")
    s = spec()
    s["encoders"]["text"]["name"] = "lstmm"
    s["fusion"]["name"] = "atention"
    with pytest.raises(ConfigError) as info:
        build_model(s)
    message = str(info.value)
    assert "encoders.text.name: unknown encoder 'lstmm'; did you mean 'lstm'?" in message
    assert "fusion.name: unknown fusion 'atention'; did you mean 'attention'?" in message
    assert len(info.value.problems) == 2  # every problem at once


def test_bad_kwargs_name_the_key_and_accepted_parameters() -> None:
    with pytest.raises(ConfigError) as info:
        build_model(spec(encoders={"text": {"kwargs": {"hiden": 3}}}, fusion={"kwargs": {"in_dims": {}}}))
    message = str(info.value)
    assert "encoders.text.kwargs.hiden: encoder 'lstm' has no parameter 'hiden'; did you mean 'hidden'?" in (
        message
    )
    assert "accepted: vocab_size, embed_dim, hidden, num_layers, bidirectional, out_dim, dropout" in message
    assert "fusion.kwargs.in_dims: is derived by the builder" in message


def test_structural_problems() -> None:
    s = spec()
    s["encoders"]["audio"]["name"] = "cnn"
    with pytest.raises(ConfigError, match=r"encoders.audio.name: encoder 'cnn' reads image, not audio; pick"):
        build_model(s)
    s = spec()
    s["head"] = {"name": "multitask", "kwargs": {}}
    with pytest.raises(ConfigError, match="needs tasks"):
        build_model(s)
    with pytest.raises(ConfigError, match="modalities"):
        spec(modalities=["image", "video"])
    with pytest.raises(ConfigError, match="not in modalities"):
        spec(modalities=["image"], encoders={"text": {"kwargs": {}}})
    with pytest.raises(ConfigError, match="format"):
        build_model({**spec(), "format": "other/9"})


def test_constructor_value_errors_become_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"encoders.image.kwargs: cannot build ImageCNN.*channels"):
        build_model(spec(encoders={"image": {"kwargs": {"channels": []}}}))
