"""Whole-model teachers over PyTorch modules, their caches, and a strategy distilling from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from _helpers import tiny_model
from mmdistill.data.collate import collate
from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.records import RawSample
from mmdistill.data.transforms.audio import LogMel
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.data.transforms.text import TextTokenizer
from mmdistill.distill.strategies import build_strategy
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.models.checkpoint import save_model
from mmdistill.teachers import TORCH_MODULES, PreprocessSpec, Teacher, teacher_cache
from mmdistill.teachers.adapters import load_mmdistill_teacher, mmdistill_teacher, torch_teacher

AUDIO = {"sample_rate": 8000, "n_fft": 128, "hop_length": 64, "n_mels": 8, "f_min": 20.0, "f_max": None,
         "max_seconds": 0.5}


def own_preprocessing(tokenizer_file: Path) -> PreprocessSpec:
    """The teacher's settings: 12x12 images, 8 kHz / 8-band mels, its own tokenizer."""
    return PreprocessSpec(image={"size": 12, "channels": 1, "mean": 0.5, "std": 0.25}, audio=dict(AUDIO),
                          text={"tokenizer": str(tokenizer_file), "max_length": 6})


def test_mmdistill_model_reads_raw_records_through_its_own_preprocessing(
        records: list[RawSample], tokenizer_file: Path) -> None:
    pre = own_preprocessing(tokenizer_file)
    model = tiny_model(vocab=TextTokenizer.load(tokenizer_file).vocab_size, mels=8)
    teacher = mmdistill_teacher(model, pre)
    assert isinstance(teacher, Teacher) and teacher.num_classes == 4
    assert teacher.feature_dims() == model.feature_dims()
    out = teacher.forward_raw(records)
    with torch.no_grad():
        ref = model(collate(pre.preprocessor().process_all(records, progress=False)))
    assert torch.equal(out.logits, ref.logits) and torch.equal(out.features["fused"], ref.features["fused"])
    with pytest.raises(ConfigError, match="must come from the teacher cache"):
        teacher(collate(pre.preprocessor().process_all(records, progress=False)))  # a collated batch


def test_fingerprint_covers_weights_and_preprocessing(tokenizer_file: Path) -> None:
    pre = own_preprocessing(tokenizer_file)
    model = tiny_model(vocab=40, mels=8)
    fp = mmdistill_teacher(model, pre).fingerprint()
    assert mmdistill_teacher(tiny_model(vocab=40, mels=8), pre).fingerprint() == fp
    other = PreprocessSpec(image={**pre.image, "std": 0.3}, audio=pre.audio, text=pre.text)
    assert mmdistill_teacher(model, other).fingerprint() != fp
    assert mmdistill_teacher(tiny_model(vocab=40, mels=8, seed=1), pre).fingerprint() != fp


def test_saved_model_loads_with_the_preprocessing_it_was_trained_with(
        tmp_path: Path, records: list[RawSample], tokenizer_file: Path) -> None:
    model = tiny_model(vocab=40, mels=8)
    folder = tmp_path / "tok"  # the tokenizer fixture's folder: model.json names tokenizer.json there
    save_model(model, folder, extra={"tokenizer": "tokenizer.json", "preprocessing": {
        "image": {"size": 12, "channels": 1, "mean": 0.5, "std": 0.25}, "audio": AUDIO,
        "text": {"vocab_size": 40, "max_length": 6, "lowercase": True}}})
    teacher = load_mmdistill_teacher(folder)
    assert teacher.preprocessing == own_preprocessing(tokenizer_file)
    with torch.no_grad():
        samples = own_preprocessing(tokenizer_file).preprocessor().process_all(records, progress=False)
        ref = model(collate(samples))
    assert torch.allclose(teacher.forward_raw(records).logits, ref.logits)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="needs tokenizer.json next to it"):
        load_mmdistill_teacher(folder)


class PluginTeacher(nn.Module):
    """What a user's plugin registers: a module over collated (image, audio) batches."""

    modalities = ["image", "audio"]
    num_classes = 4

    def __init__(self, hidden: int = 5) -> None:
        super().__init__()
        self.image = nn.Linear(144, hidden)
        self.audio = nn.Linear(8, hidden)
        self.head = nn.Linear(hidden, 4)

    def feature_dims(self) -> dict[str, int]:
        return {"fused": self.image.out_features}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        fused = torch.relu(self.image(batch["image"].flatten(1)) + self.audio(batch["audio"].mean(-1)))
        return {"logits": self.head(fused), "fused": fused}


if "test_plugin_teacher" not in TORCH_MODULES:
    TORCH_MODULES.register("test_plugin_teacher")(PluginTeacher)


def test_plugin_module_with_safetensors_weights(tmp_path: Path, records: list[RawSample],
                                                 tokenizer_file: Path) -> None:
    torch.manual_seed(0)
    trained = PluginTeacher(hidden=5)
    save_file(trained.state_dict(), str(tmp_path / "w.safetensors"))
    pre = PreprocessSpec(image=own_preprocessing(tokenizer_file).image, audio=dict(AUDIO))
    teacher = torch_teacher("test_plugin_teacher", pre, path=tmp_path / "w.safetensors", kwargs={"hidden": 5})
    assert teacher.modalities == ["image", "audio"] and teacher.feature_dims() == {"fused": 5}
    full = [r for r in records if r.image is not None and r.audio is not None]
    out = teacher.forward_raw(full)
    with torch.no_grad():
        ref = trained(collate(pre.preprocessor().process_all(full, progress=False)))
    assert torch.allclose(out.logits, ref["logits"]) and out.features["fused"].shape == (len(full), 5)
    with pytest.raises(ConfigError, match="did you mean 'test_plugin_teacher'"):
        torch_teacher("test_plugin_teachr", pre)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="pickle checkpoints are never loaded"):
        torch_teacher("test_plugin_teacher", pre, path=tmp_path / "w.pt", kwargs={"hidden": 5})
    with pytest.raises(CheckpointError, match=r"w.safetensors: weights do not fit PluginTeacher"):
        torch_teacher("test_plugin_teacher", pre, path=tmp_path / "w.safetensors", kwargs={"hidden": 6})


def test_student_distills_from_the_cache_of_a_raw_record_teacher(
        tmp_path: Path, records: list[RawSample], tokenizer_file: Path) -> None:
    teacher = mmdistill_teacher(tiny_model(vocab=40, mels=8), own_preprocessing(tokenizer_file))
    cache = teacher_cache(tmp_path / "cache", teacher, records, features=["fused"], batch_size=5,
                          progress=False)
    assert cache.lookup(["r005"])["logits"].shape == (1, 4)
    # The student reads other preprocessing (28x28 images, 16 kHz / 12-band mels, its own vocabulary).
    student_pre = Preprocessor(image=ImageTransform(size=28), audio=LogMel(n_mels=12),
                               modalities=["image", "audio"])
    student = tiny_model(["image", "audio"], mels=12)
    terms = [{"name": "kd", "kwargs": {"temperature": 2.0}},
             {"name": "hint", "student_feature": "fused", "teacher_feature": "fused"}]
    strategy = build_strategy("feature_kd", student, teachers={"teacher": teacher}, caches={"teacher": cache},
                              terms=terms)
    batch = collate(student_pre.process_all(records[:6], progress=False))
    result = strategy(batch, compute_loss=True)
    assert torch.isfinite(result["loss"]) and {"loss/kd", "loss/hint"} <= set(result)
    result["loss"].backward()
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    with torch.no_grad():
        expected = teacher.forward_raw(records[:6]).logits
    torch.testing.assert_close(strategy.teacher_outputs(batch)["teacher"]["logits"], expected)


def test_one_encoder_of_a_saved_mmdistill_model_as_a_frozen_encoder(
        tmp_path: Path, records: list[RawSample]) -> None:
    from mmdistill.teachers.encoders import collate_inputs
    from mmdistill.teachers.spec import build_encoder

    model = tiny_model(["image", "audio"], mels=8)
    save_model(model, tmp_path / "m", extra={"preprocessing": {
        "image": {"size": 12, "channels": 1, "mean": 0.5, "std": 0.25}, "audio": AUDIO}})
    enc = build_encoder("image", {"name": "mmdistill", "path": str(tmp_path / "m")})
    assert enc.modality == "image" and enc.out_dim == model.encoders["image"].out_dim and enc.finetunable
    full = [r for r in records if r.image is not None]
    x, _ = collate_inputs([ImageTransform(size=12)(r.image) for r in full], "image")
    with torch.no_grad():
        torch.testing.assert_close(enc.embed(full), model.encoders["image"](x).pooled)
    with pytest.raises(CheckpointError, match="the model has no text encoder"):
        build_encoder("text", {"name": "mmdistill", "path": str(tmp_path / "m")})
