"""Bring-your-own teachers through the whole pipeline, on a 12-record manifest (1 epoch, 1 thread):

* a PyTorch module of the user's code, named through the config's ``plugins`` list (``mmdistill run``,
  then ``mmdistill distill --run-dir`` reusing it);
* a Hugging Face sequence classifier saved in a local folder (offline, nothing downloaded);
* pretrained encoders with ``finetune_layers > 0`` (online: no embedding store), then the run
  resumed after its teacher stage: the teacher is reused, not rebuilt;
* ``mmdistill run --resume`` with a stored plugin encoder: no file of the teacher or its caches rewritten.

``tests/teachers/test_pipeline.py`` covers stored frozen encoders and ONNX teachers;
``tests/integration/test_pretrained_teacher.py`` kills and resumes a run with the real MiniLM and
speech-embedding encoders.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from _teacher_data import save_tiny_bert

from _helpers import write_manifest
from mmdistill.cli.main import main
from mmdistill.config import config_from_dict
from mmdistill.recipes.pipeline import run_pipeline

FAST = {"epochs": 1, "patience": None}


def config(tmp: Path, manifest: Path, teacher: dict[str, Any], *, feature: str = "fused",
           **top: Any) -> dict[str, Any]:
    """A tiny run over image+text+audio: teacher (as given), scratch student, a kd student and a hint
    student whose fused feature learns the teacher's ``feature``."""
    return {
        "name": "run", "threads": 1, "output_dir": str(tmp), "stages": ["teacher", "student", "distill",
                                                                         "evaluate"],
        "data": {"source": "manifest", "manifest": str(manifest), "modalities": ["image", "text", "audio"],
                 "batch_size": 4, "eval_batch_size": 5, "text": {"vocab_size": 40}, "image": {"size": 20}},
        "teacher": {"preset": "tiny", "train": FAST, **teacher},
        "student": {"preset": "tiny", "train": FAST},
        "distill": {"students": {
            "kd": {"strategy": "logit_kd", "train": FAST},
            "hint": {"strategy": "feature_kd", "train": FAST, "terms": [
                {"name": "kd_ce"}, {"name": "hint", "student_feature": "fused", "teacher_feature": feature}]},
        }},
        "eval": {"latency": True, "latency_batch_sizes": [2], "latency_repeats": 2, "latency_warmup": 0},
        "logging": {"progress": False, "quiet": True},
        **top,
    }


def run_cli(args: list[str]) -> int:
    """``mmdistill ARGS`` in process; its exit status."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("data"))


def summary(run: Path) -> dict[str, dict]:
    return {r["model"]: r for r in json.loads((run / "eval" / "summary.json").read_text())}


def test_plugin_torch_module_teacher_through_the_cli(tmp_path: Path, manifest: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from _plugin_teacher import PluginImageAudioTeacher
    from safetensors.torch import save_file

    from mmdistill.teachers import TORCH_MODULES

    torch.manual_seed(0)
    save_file(PluginImageAudioTeacher().state_dict(), str(tmp_path / "w.safetensors"))
    # Unregistered and unimported again: only the config's `plugins` list can register it for the run.
    monkeypatch.delitem(sys.modules, "_plugin_teacher")
    for name in ("plugin_image_audio", "plugin_image_encoder"):
        monkeypatch.delitem(TORCH_MODULES._entries, name)
    teacher = {"modalities": ["image", "audio"],
               "external": {"kind": "torch", "module": "plugin_image_audio", "path": "w.safetensors"}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(
        config(tmp_path, manifest, teacher, plugins=["_plugin_teacher"])))
    assert run_cli(["run", str(tmp_path / "cfg.yaml"), "-q"]) == 0
    run = tmp_path / "run"
    saved = json.loads((run / "teacher" / "external.json").read_text())
    assert saved["external"]["module"] == "plugin_image_audio" and saved["modalities"] == ["image", "audio"]
    assert saved["external"]["path"] == str(tmp_path / "w.safetensors")  # resolved against the config file
    assert not (run / "teacher" / "model.json").exists()
    assert "plugin_image_audio" in TORCH_MODULES
    # Two teacher caches over the 8 training records: logits for kd, logits + "fused" for hint.
    caches = {p.parent.name: p.parent for p in (run / "cache").glob("teacher-*/logits.npy")}
    assert len(caches) == 2
    shapes = sorted(tuple(np.load(d / "logits.npy").shape) for d in caches.values())
    assert shapes == [(8, 2), (8, 2)]
    assert any(np.load(p).shape == (8, 6) for d in caches.values() for p in d.glob("features-fused*.npy"))
    ev = json.loads((run / "eval" / "teacher.json").read_text())
    assert ev["teacher_kind"] == "external" and ev["modalities"] == ["image", "audio"]
    assert ev["parameters"] == (20 + 40) * 6 + 6 + 6 * 2 + 2  # the plugin's two Linear layers
    assert ev["size_parts"]["model"]["runtime"] == "torch"
    rows = summary(run)
    assert {"teacher", "student-kd", "student-hint", "student-scratch"} <= set(rows)
    assert all(0.0 <= rows[f"student-{n}"]["teacher_agreement"] <= 1.0 for n in ("kd", "hint"))
    # `mmdistill distill --run-dir` reuses the run folder's teacher and its caches.
    kept = {p: p.stat().st_mtime_ns for p in [run / "teacher" / "external.json", *run.glob("cache/*/*.npy")]}
    assert run_cli(["distill", str(tmp_path / "cfg.yaml"), "--run-dir", str(run), "-q"]) == 0
    assert {p: p.stat().st_mtime_ns for p in kept} == kept


def tiny_bert(folder: Path, *, classifier: bool, seed: int = 0) -> Path:
    """A tiny random BERT (+ its tokenizer) with 2 labels; nothing downloaded."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "low", "high", "sound"]
    return save_tiny_bert(folder, vocab, classifier=classifier, num_labels=2, seed=seed)


def test_hugging_face_classifier_from_a_local_folder_through_the_pipeline(
        tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tiny_bert(tmp_path / "bert", classifier=True)
    teacher = {"modalities": ["text"], "external": {"kind": "huggingface", "path": str(folder),
                                                    "kwargs": {"max_length": 8}}}
    cfg = config_from_dict(config(tmp_path, manifest, teacher, feature="text.pooled"), base_dir=tmp_path)
    run = tmp_path / "run"
    run_pipeline(cfg, run)
    saved = json.loads((run / "teacher" / "external.json").read_text())
    assert saved["kind"] == "external" and saved["num_classes"] == 2 and saved["modalities"] == ["text"]
    # A text-only teacher distilling an image+text+audio student; "text.pooled": the BERT's mean-pooled
    # last hidden state.
    ev = json.loads((run / "eval" / "teacher.json").read_text())
    assert ev["teacher_kind"] == "external" and ev["modalities"] == ["text"] and ev["n"] == 2
    bert = sum(p.numel() for p in __import__("transformers").BertForSequenceClassification.from_pretrained(
        str(folder), local_files_only=True).parameters())
    assert ev["parameters"] == bert and ev["size_parts"]["model"]["runtime"] == "torch"
    assert ev["latency"]["b2"]["median_ms"] > 0
    pooled = [np.load(p).shape for p in (run / "cache").glob("teacher-*/features-text.pooled*.npy")]
    assert pooled == [(8, 16)]
    rows = summary(run)
    assert all(0.0 <= rows[f"student-{n}"]["teacher_agreement"] <= 1.0 for n in ("kd", "hint"))


def test_finetuned_encoders_train_online_and_a_resumed_run_reuses_the_teacher(
        tmp_path: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from safetensors.torch import load_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tiny_bert(tmp_path / "bert", classifier=False)
    teacher = {"pretrained": {
        "text": {"name": "hf_text", "path": str(folder), "kwargs": {"max_length": 8}, "finetune_layers": 1},
        "image": {"name": "torch", "kwargs": {"module": "plugin_image_encoder"}, "finetune_layers": 1}}}
    cfg = config_from_dict(config(tmp_path, manifest, teacher, plugins=["_plugin_teacher"]),
                           base_dir=tmp_path)
    run = tmp_path / "run"
    run_pipeline(cfg, run)

    # Both pretrained encoders ran online inside the head model: no embedding store was built.
    assert not list((run / "cache").glob("embeddings/teacher-*"))
    meta = json.loads((run / "teacher" / "teacher.json").read_text())
    assert {m: e["finetune_layers"] for m, e in meta["encoders"].items()} == {"text": 1, "image": 1}
    head = json.loads((run / "teacher" / "head" / "model.json").read_text())["spec"]["encoders"]
    assert head["text"]["name"] == "pretrained_text" and head["image"]["name"] == "pretrained_image"
    assert head["audio"]["name"] != "embedding_audio"  # trained with the head (the preset's encoder)
    # Only the last BERT layer (and the head) trained: the first layer still holds the saved weights.
    weights = load_file(str(run / "teacher" / "head" / "model.safetensors"))
    original = load_file(str(folder / "model.safetensors"))
    inner = "encoders.text.inner.model."
    first, last = "encoder.layer.0.output.dense.weight", "encoder.layer.1.output.dense.weight"
    assert torch.equal(weights[inner + first], original[first])
    assert not torch.equal(weights[inner + last], original[last])
    ev = json.loads((run / "eval" / "teacher.json").read_text())
    # The fine-tuned encoders live inside the head: every parameter counted once.
    params = {k: v for k, v in weights.items() if not k.endswith(("running_mean", "running_var"))
              and v.is_floating_point()}  # BatchNorm statistics are buffers, not parameters
    assert ev["parameters"] == sum(v.numel() for v in params.values())
    parts = ev["size_parts"]
    assert set(parts) == {"text: hf_text (fine-tuned)", "image: torch (fine-tuned)", "head (trained)"}
    assert parts["text: hf_text (fine-tuned)"]["parameters"] == sum(
        v.numel() for k, v in params.items() if k.startswith("encoders.text."))
    assert ev["parameters"] == sum(p["parameters"] for p in parts.values())
    assert 0.0 <= ev["accuracy"] <= 1.0

    # Resume a run interrupted after its teacher stage: the teacher is reused, not rebuilt.
    progress = json.loads((run / "progress.json").read_text())
    progress["status"] = "running"
    progress["stages"] = {k: v for k, v in progress["stages"].items() if k in ("teacher", "student")}
    (run / "progress.json").write_text(json.dumps(progress))
    saved = {p: p.stat().st_mtime_ns for p in (run / "teacher").rglob("*") if p.is_file()}
    caches = {p: p.stat().st_mtime_ns for p in (run / "cache").rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="mmdistill"):
        run_pipeline(cfg, run, resume=True)
    assert "teacher: done in the interrupted run, skipped" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in saved} == saved
    assert {p: p.stat().st_mtime_ns for p in caches} == caches  # the teacher caches hit: no teacher forward
    assert "teacher cache miss" not in caplog.text
    assert (run / "eval" / "summary.json").is_file()


def test_a_plugin_module_without_weights_is_rebuilt_the_same_in_every_stage() -> None:
    """Without ``path`` the module keeps its initial weights; later stages rebuild it, and a different
    random init would be refused as "changed since the teacher stage"."""
    import _plugin_teacher  # noqa: F401 - registers the modules

    from mmdistill.teachers import PreprocessSpec
    from mmdistill.teachers.adapters import torch_teacher
    from mmdistill.teachers.spec import build_encoder

    pre = PreprocessSpec(image={"size": 20}, audio={"sample_rate": 16000})
    state = torch.random.get_rng_state()
    a, b = (torch_teacher("plugin_image_audio", pre) for _ in range(2))
    assert a.fingerprint() == b.fingerprint()
    source = {"name": "torch", "kwargs": {"module": "plugin_image_encoder"}}
    assert len({build_encoder("image", source, preprocessing=pre).fingerprint() for _ in range(2)}) == 1
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random stream is untouched


def test_run_resume_reuses_a_stored_plugin_encoder_teacher(tmp_path: Path, manifest: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`mmdistill run --resume` after the teacher stage: no encoder runs again, no file is rewritten.

    (``tests/integration/test_pretrained_teacher.py`` kills a real run with MiniLM + speech
    embedding; this one needs no extra and also checks the teacher caches.)"""
    teacher = {"pretrained": {"image": {"name": "torch", "kwargs": {"module": "plugin_image_encoder"}}},
               "embedding": {"dim": 4}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(
        config(tmp_path, manifest, teacher, plugins=["_plugin_teacher"])))
    assert run_cli(["run", str(tmp_path / "cfg.yaml"), "-q"]) == 0
    run = tmp_path / "run"
    (store,) = (run / "cache" / "embeddings").glob("teacher-*/features-image.embedding.npy")
    assert np.load(store).shape == (12, 8)  # the plugin encoder's 8-d output, every record once
    assert json.loads((run / "teacher" / "teacher.json").read_text())["encoders"]["image"]["name"] == "torch"

    progress = json.loads((run / "progress.json").read_text())  # as if killed after the student stage
    progress["status"] = "running"
    progress["stages"] = {k: v for k, v in progress["stages"].items() if k in ("teacher", "student")}
    (run / "progress.json").write_text(json.dumps(progress))
    files = {p: p.stat().st_mtime_ns for d in ("teacher", "cache") for p in (run / d).rglob("*")
             if p.is_file()}
    capsys.readouterr()
    assert run_cli(["run", "--resume", str(run), "--log-level", "INFO"]) == 0
    logs = " ".join(capsys.readouterr().err.split())
    assert "teacher: done in the interrupted run, skipped" in logs and "cache miss" not in logs
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert json.loads((run / "progress.json").read_text())["status"] == "finished"


def test_a_finetuned_bert_keeps_every_frozen_part_in_eval_mode(tmp_path: Path) -> None:
    """Dropout in the frozen embeddings would feed the frozen first layer noise the frozen encoder
    never sees; only the trainable last layer trains."""
    from mmdistill.teachers.head import FinetuneEncoder

    folder = tiny_bert(tmp_path / "bert", classifier=False)
    enc = FinetuneEncoder("text", {"name": "hf_text", "path": str(folder), "kwargs": {}}, finetune_layers=1)
    enc.train()
    bert = enc.inner.model
    assert not bert.embeddings.training and not bert.encoder.layer[0].training
    assert bert.encoder.layer[1].training and bert.encoder.layer[1].output.dropout.training
    x, lengths = torch.tensor([[2, 5, 6, 8, 3]]), torch.tensor([5])
    with torch.no_grad():
        hidden = bert.embeddings(input_ids=x)
    torch.testing.assert_close(hidden, bert.embeddings(input_ids=x))  # no dropout on the frozen part
    assert enc(x, lengths).pooled.shape == (1, 16)
