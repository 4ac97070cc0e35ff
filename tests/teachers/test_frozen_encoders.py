"""Frozen pretrained encoders + a trained mmdistill head: samples, store, training, save/load, fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _teacher_data import make_records
from safetensors.torch import save_file
from torch import nn

from _helpers import train_briefly
from mmdistill.data.collate import collate
from mmdistill.data.records import RawSample
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.models.builders import build_model
from mmdistill.models.outputs import EncoderOutput
from mmdistill.teachers import (
    TORCH_MODULES,
    EncoderSpec,
    FrozenEncodersTeacher,
    PreprocessSpec,
    PretrainedEncoder,
    TeacherPlan,
    embedding_store,
    head_spec,
    load_frozen_teacher,
    save_frozen_teacher,
    teacher_cache,
    teacher_samples,
)
from mmdistill.teachers.fingerprint import settings_fingerprint
from mmdistill.teachers.head import FinetuneEncoder

IMAGE = {"size": 12, "channels": 1, "mean": 0.5, "std": 0.25}
AUDIO = {"sample_rate": 16000, "n_fft": 256, "hop_length": 128, "n_mels": 8, "f_min": 20.0, "f_max": None,
         "max_seconds": 0.5}


class FakeEncoder:
    """A deterministic stand-in for a pretrained encoder (counts how many records it embedded)."""

    finetunable = False

    def __init__(self, modality: str, out_dim: int, version: int = 1) -> None:
        self.modality, self.out_dim, self.version, self.calls = modality, out_dim, version, 0

    def fingerprint(self) -> str:
        return settings_fingerprint("fake", {"m": self.modality, "v": self.version})

    def preprocess(self, records: list[RawSample]) -> list[torch.Tensor]:
        return [torch.zeros(1) for _ in records]

    def embed(self, records: list[RawSample]) -> torch.Tensor:
        self.calls += len(records)
        if self.modality == "text":
            rows = [[float(r.text.count(c)) for c in "eortwhnu"] for r in records]
        else:
            rows = [[float(abs(r.audio).mean()) * k for k in range(1, self.out_dim + 1)] for r in records]
        return torch.tensor(rows)

    def module(self) -> nn.Module:
        raise NotImplementedError


def fake_plan(version: int = 1) -> TeacherPlan:
    encoders = {"text": FakeEncoder("text", 8, version), "audio": FakeEncoder("audio", 3, version)}
    specs = {m: EncoderSpec(f"fake_{m}") for m in encoders}
    return TeacherPlan(["image", "text", "audio"], specs, encoders, PreprocessSpec(image=dict(IMAGE)))


def trained_head(plan: TeacherPlan, records: list[RawSample]) -> nn.Module:
    torch.manual_seed(0)
    head = build_model(head_spec(plan, num_classes=4, preset="tiny", embedding={"dim": 6}))
    batches = [collate(teacher_samples(records[i:i + 4], plan)) for i in range(0, len(records), 4)]
    return train_briefly(head, batches, epochs=2)


def test_samples_hold_embeddings_for_stored_modalities_and_own_inputs_for_trained_ones(
        records: list[RawSample]) -> None:
    plan = fake_plan()
    assert isinstance(plan.encoders["text"], PretrainedEncoder)
    assert (plan.stored, plan.finetuned, plan.trained) == (["text", "audio"], [], ["image"])
    samples = teacher_samples(records, plan)
    assert samples[0]["text"].shape == (8,) and samples[0]["audio"].shape == (3,)
    assert samples[0]["image"].shape == (1, 12, 12)
    assert "audio" not in samples[1] and "text" not in samples[2] and "image" not in samples[3]
    spec = head_spec(plan, num_classes=4, preset="tiny", embedding={"dim": 6})
    assert spec["encoders"]["text"] == {"name": "embedding_text", "kwargs": {"in_dim": 8, "dim": 6}}
    assert spec["encoders"]["image"]["name"] == "cnn"
    out = build_model(spec)(collate(samples))
    assert out.logits.shape == (12, 4) and out.features["text.pooled"].shape == (12, 6)


def test_store_embeds_each_record_once_and_the_teacher_reads_it(
        tmp_path: Path, records: list[RawSample]) -> None:
    plan = fake_plan()
    text = plan.encoders["text"]
    store = embedding_store(tmp_path / "emb", text, records, batch_size=5, progress=False)
    assert text.calls == 11  # one record has no text: a zero row, never embedded
    assert torch.equal(store.lookup(["r002"])["text.embedding"], torch.zeros(1, 8))
    embedding_store(tmp_path / "emb", text, records, progress=False)
    assert text.calls == 11  # reused
    relabeled = [RawSample(**{**vars(r), "label": 0}) for r in records]
    embedding_store(tmp_path / "emb", text, relabeled, progress=False)
    assert text.calls == 11  # labels and other modalities are not part of a store's key
    head = trained_head(plan, records)
    live = FrozenEncodersTeacher(plan, head).forward_raw(records)
    calls = text.calls
    stored = FrozenEncodersTeacher(plan, head, stores={"text": store}).forward_raw(records)
    assert text.calls == calls  # every text embedding came from the store
    torch.testing.assert_close(stored.logits, live.logits)
    assert set(stored.features) == {"image.pooled", "text.pooled", "audio.pooled", "fused"}


def test_save_load_round_trip_and_a_changed_encoder_is_refused(
        tmp_path: Path, records: list[RawSample]) -> None:
    plan = fake_plan()
    teacher = FrozenEncodersTeacher(plan, trained_head(plan, records))
    save_frozen_teacher(tmp_path / "teacher", teacher, extra={"classes": ["a", "b", "c", "d"]})
    assert not (tmp_path / "teacher" / "model.json").exists()  # the head lives in teacher/head/

    def build(m: str, source: dict[str, Any], preprocessing: Any = None) -> FakeEncoder:
        return FakeEncoder(m, {"text": 8, "audio": 3}[m])

    loaded = load_frozen_teacher(tmp_path / "teacher", build=build)
    assert loaded.fingerprint() == teacher.fingerprint()
    torch.testing.assert_close(loaded.forward_raw(records).logits, teacher.forward_raw(records).logits)
    cache = teacher_cache(tmp_path / "cache", loaded, records, features=["fused", "audio.pooled"],
                          progress=False)
    assert cache.dims == {"logits": 4, "fused": 16, "audio.pooled": 6}

    def upgraded(m: str, source: dict[str, Any], preprocessing: Any = None) -> FakeEncoder:
        return FakeEncoder(m, {"text": 8, "audio": 3}[m], version=2)

    with pytest.raises(CheckpointError, match="text encoder 'fake_text' changed since this teacher's head"):
        load_frozen_teacher(tmp_path / "teacher", build=upgraded)
    with pytest.raises(CheckpointError, match="teacher.json: unreadable"):
        load_frozen_teacher(tmp_path / "nowhere", build=build)


class TinyAudioEncoder(nn.Module):
    """A user's pretrained audio encoder: three blocks over the mel mean (an mmdistill-style encoder)."""

    def __init__(self, n_mels: int = 8, dim: int = 4) -> None:
        super().__init__()
        self.out_dim = dim
        self.blocks = nn.ModuleList([nn.Linear(n_mels, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)])
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        h = x.mean(-1)
        for block in self.blocks:
            h = self.drop(torch.tanh(block(h)))
        return EncoderOutput(pooled=h)


if "test_tiny_audio" not in TORCH_MODULES:
    TORCH_MODULES.register("test_tiny_audio")(TinyAudioEncoder)


def test_fine_tuning_trains_only_the_last_layers_online(tmp_path: Path) -> None:
    records = make_records(8, absent=False)
    torch.manual_seed(0)
    save_file(TinyAudioEncoder().state_dict(), str(tmp_path / "audio.safetensors"))
    pre = PreprocessSpec(image=dict(IMAGE), audio=dict(AUDIO))
    source = {"name": "torch", "path": str(tmp_path / "audio.safetensors"),
              "kwargs": {"module": "test_tiny_audio"}}
    from mmdistill.teachers.spec import build_encoder

    audio = build_encoder("audio", source, preprocessing=pre)
    spec = EncoderSpec("torch", source["path"], source["kwargs"], finetune_layers=1)
    plan = TeacherPlan(["image", "audio"], {"audio": spec}, {"audio": audio}, pre)
    assert plan.finetuned == ["audio"] and plan.stored == []
    spec = head_spec(plan, num_classes=4, preset="tiny")
    assert spec["encoders"]["audio"]["name"] == "pretrained_audio"
    head = build_model(spec)
    enc = head.encoders["audio"]
    assert isinstance(enc, FinetuneEncoder)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"inner.inner.blocks.2.weight", "inner.inner.blocks.2.bias"}
    samples = teacher_samples(records, plan)
    assert samples[0]["audio"].shape[0] == 8  # the encoder's own mel input, not an embedding
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    head.train()
    assert not enc.inner.inner.blocks[0].training and enc.inner.inner.blocks[2].training
    train_briefly(head, [collate(samples)], epochs=2)
    changed = {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable
    with pytest.raises(ConfigError, match=r"finetune_layers must be in \[0, 3\]"):
        FinetuneEncoder("audio", source, finetune_layers=4, preprocessing=pre.settings())
