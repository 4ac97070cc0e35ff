"""ONNX export: every registered encoder and fusion, dynamic batch/lengths, absent modalities, sidecar,
feeds and the flattened batch files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmdistill.data.batch import drop_modalities
from mmdistill.export.onnx import (
    ExportError,
    batch_to_flat,
    export_onnx,
    flat_to_batch,
    input_names_for,
    load_export_info,
    load_flat_batch,
    onnx_feeds,
    save_flat_batch,
)
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.models.registries import ENCODERS, FUSIONS

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ALL = ("image", "text", "audio")
VOCAB, MELS, SIDE = 50, 16, 12
# Encoders whose constructor needs the test's input size (the MLP fixes C*H*W).
ENCODER_KWARGS: dict[str, dict[str, Any]] = {"mlp": {"image_size": SIDE, "hidden": [8]}}


def make_batch(rows: int, modalities: tuple[str, ...] = ALL, *, steps: int = 8, frames: int = 20,
               seed: int = 0) -> dict[str, Any]:
    """A batch per mmdistill.data.batch with random lengths in [1, steps] / [4, frames]."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"id": [f"r{i}" for i in range(rows)], "lengths": {}, "present": {},
                           "label": torch.randint(0, 3, (rows,), generator=g)}
    if "image" in modalities:
        out["image"] = torch.randn(rows, 1, SIDE, SIDE, generator=g)
    if "text" in modalities:
        n = torch.randint(1, steps + 1, (rows,), generator=g)
        n[0] = steps  # the longest row fills the padded width, as collate does
        ids = torch.randint(1, VOCAB, (rows, steps), generator=g)
        out["text"], out["lengths"]["text"] = ids.masked_fill(torch.arange(steps) >= n[:, None], 0), n
    if "audio" in modalities:
        n = torch.randint(4, frames + 1, (rows,), generator=g)
        n[0] = frames
        mel = torch.randn(rows, MELS, frames, generator=g)
        out["audio"], out["lengths"]["audio"] = mel * (torch.arange(frames) < n[:, None]).unsqueeze(1), n
    for m in modalities:
        out["present"][m] = torch.ones(rows, dtype=torch.bool)
    return out


def make_model(modalities: tuple[str, ...] = ALL, fusion: str = "concat",
               encoders: dict[str, str] | None = None) -> MultimodalModel:
    torch.manual_seed(0)
    overrides = {m: {"name": n, "kwargs": ENCODER_KWARGS.get(n, {})} for m, n in (encoders or {}).items()}
    spec = model_spec("tiny", modalities=modalities, num_classes=3, vocab_size=VOCAB, n_mels=MELS,
                      fusion={"name": fusion}, encoders=overrides)
    return build_model(spec).eval()


def ort_logits(path: str | Path, batch: dict[str, Any], info: Any) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, onnx_feeds(batch, info.input_names, info.input_shapes))[0]


def eager_logits(model: MultimodalModel, batch: dict[str, Any]) -> np.ndarray:
    with torch.no_grad():
        return model(batch).logits.numpy()


@pytest.mark.parametrize("encoder", ENCODERS.names())
def test_every_encoder_exports_with_dynamic_batch_and_lengths(encoder: str, tmp_path: Path) -> None:
    modality = ENCODERS.entry(encoder).meta["modality"]
    model = make_model((modality,), encoders={modality: encoder})
    info = export_onnx(model, tmp_path / "m.onnx", make_batch(4, (modality,)))
    assert info.input_names == input_names_for([modality])
    # Another batch size and other (shorter) lengths than the example, one row absent.
    other = make_batch(3, (modality,), steps=5, frames=13, seed=3)
    other["present"][modality][1] = False
    got, expected = ort_logits(info.path, other, info), eager_logits(model, other)
    assert got.shape == (3, 3) and np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_every_fusion_exports_and_masks_absent_modalities_like_eager(fusion: str, tmp_path: Path) -> None:
    model = make_model(ALL, fusion, encoders={"text": "lstm", "audio": "crnn"})
    info = export_onnx(model, tmp_path / "m.onnx", make_batch(2))
    assert info.input_names == ["image", "image_present", "text", "text_lengths", "text_present",
                                "audio", "audio_lengths", "audio_present"]
    batch = make_batch(5, steps=11, frames=24, seed=1)
    batch["present"]["image"] = torch.tensor([True, False, True, True, False])
    batch["present"]["audio"] = torch.tensor([False, True, True, False, True])
    no_text = drop_modalities(batch, ["text"])  # fed as zeros with text_present=False
    for b in (batch, no_text):
        assert np.abs(ort_logits(info.path, b, info) - eager_logits(model, b)).max() < 1e-4
    # Text matters where present, so the equality above is not vacuous.
    assert np.abs(eager_logits(model, batch) - eager_logits(model, no_text)).max() > 1e-3


def test_sidecar_describes_inputs_and_follows_moved_files(tmp_path: Path) -> None:
    model = make_model(("text", "audio"))
    ckpt = tmp_path / "run" / "students" / "kd"
    ckpt.mkdir(parents=True)
    info = export_onnx(model, tmp_path / "run" / "export" / "kd.onnx", make_batch(2, ("text", "audio")),
                       opset=17, checkpoint=ckpt)
    raw = json.loads((tmp_path / "run" / "export" / "kd.onnx.json").read_text())
    assert raw["inputs"]["text"] == {"dtype": "int64", "shape": ["batch", "text_steps"]}
    assert raw["inputs"]["audio"] == {"dtype": "float32", "shape": ["batch", MELS, "audio_frames"]}
    assert raw["inputs"]["audio_present"] == {"dtype": "bool", "shape": ["batch"]}
    assert (raw["modalities"], raw["num_classes"], raw["opset"]) == (["text", "audio"], 3, 17)
    assert raw["spec"] == model.spec and raw["checkpoint"] == "../students/kd"
    shutil.move(tmp_path / "run", tmp_path / "moved")
    loaded = load_export_info(tmp_path / "moved" / "export" / "kd.onnx")
    assert loaded.checkpoint_dir().resolve() == (tmp_path / "moved" / "students" / "kd").resolve()
    assert loaded.input_names == info.input_names and Path(loaded.path).is_file()


def test_sidecar_missing_or_foreign_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"x\.onnx\.json is missing"):
        load_export_info(tmp_path / "x.onnx")
    (tmp_path / "y.onnx.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ExportError, match="expected format 'mmdistill.onnx/1', got 'other'"):
        load_export_info(tmp_path / "y.onnx")


def test_export_needs_every_modality_and_wraps_exporter_failures(tmp_path: Path, monkeypatch) -> None:
    model = make_model(ALL, "gated").train()
    with pytest.raises(ExportError, match=r"lacks modalities \['audio'\]"):
        export_onnx(model, tmp_path / "m.onnx", make_batch(2, ("image", "text")))

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match=r"'image': 'cnn'.*fusion 'gated'.*aten::weird") as info:
        export_onnx(model, tmp_path / "m.onnx", make_batch(2))
    assert "try another opset" in str(info.value)
    assert model.training  # the caller's mode is restored


def test_onnx_feeds_fill_absent_modalities_with_zeros_and_false() -> None:
    names = input_names_for(ALL)
    batch = make_batch(3, ("image",))
    shapes = {"image": ["batch", 1, SIDE, SIDE], "audio": ["batch", MELS, "audio_frames"]}
    feeds = onnx_feeds(batch, names, shapes)
    assert list(feeds) == names
    assert feeds["text"].dtype == np.int64 and feeds["text"].shape == (3, 1) and not feeds["text"].any()
    assert feeds["audio"].dtype == np.float32 and feeds["audio"].shape == (3, MELS, 1)
    assert feeds["text_lengths"].tolist() == [0, 0, 0] and feeds["audio_present"].tolist() == [False] * 3
    assert feeds["image_present"].dtype == np.bool_ and feeds["image_present"].all()
    np.testing.assert_array_equal(feeds["image"], batch["image"].numpy())
    with pytest.raises(ExportError, match="pass input_shapes"):
        onnx_feeds(batch, names)  # audio's mel bands are unknown without shapes


def test_flat_batch_round_trip_uses_the_onnx_names(tmp_path: Path) -> None:
    batch = make_batch(4, ("text", "audio"), seed=2)
    batch["present"]["audio"][2] = False
    batch["tasks"] = {"parity": torch.tensor([0, 1, -100, 1])}
    flat = batch_to_flat(batch)
    assert sorted(flat) == sorted(["text", "text_lengths", "text_present", "audio", "audio_lengths",
                                   "audio_present", "label", "tasks.parity"])
    path = save_flat_batch(batch, tmp_path / "b.safetensors")
    back = load_flat_batch(path)
    assert back["id"] == batch["id"]
    for key in ("text", "audio", "label"):
        assert torch.equal(back[key], batch[key])
    for group in ("present", "lengths"):
        assert {m: v.tolist() for m, v in back[group].items()} == {
            m: v.tolist() for m, v in batch[group].items()
        }
    assert torch.equal(back["tasks"]["parity"], batch["tasks"]["parity"])
    # The flat tensors are ORT feeds as they stand (minus the labels).
    feeds = onnx_feeds(back, input_names_for(("text", "audio")))
    assert all(np.array_equal(feeds[k], flat[k].numpy()) for k in feeds)
    assert flat_to_batch({"label": torch.zeros(2, dtype=torch.long)})["id"] == ["0", "1"]
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ExportError, match="bad.safetensors"):
        load_flat_batch(tmp_path / "bad.safetensors")


def test_student_preset_exports_at_the_demo_image_size(tmp_path: Path) -> None:
    """28x28 digits reach the 2x2 grid pool as 7x7 maps (uneven bins): export must match eager."""
    torch.manual_seed(0)
    spec = model_spec("student", modalities=ALL, num_classes=3, vocab_size=VOCAB, n_mels=MELS)
    model = build_model(spec).eval()
    batch = make_batch(4)
    batch["image"] = torch.randn(4, 1, 28, 28)
    info = export_onnx(model, tmp_path / "s.onnx", batch)
    other = make_batch(6, seed=3)
    other["image"] = torch.randn(6, 1, 28, 28)
    np.testing.assert_allclose(ort_logits(tmp_path / "s.onnx", other, info), eager_logits(model, other),
                               atol=1e-4)


def _branch_ops(path: str | Path) -> dict[str, list[str]]:
    """Op types of the exported graph per top-level module (``image``, ``text``, ``audio``, ...)."""
    import onnx

    ops: dict[str, list[str]] = {}
    for node in onnx.load(str(path)).graph.node:
        parts = node.name.strip("/").split("/")
        ops.setdefault(parts[1] if len(parts) > 2 and parts[0] == "model" else "", []).append(node.op_type)
    return ops


def _upper_clipped_branches(path: str | Path) -> set[str]:
    """Top-level modules of the graph holding a ``Clip`` with an upper bound (a non-empty 3rd input)."""
    import onnx

    out = set()
    for node in onnx.load(str(path)).graph.node:
        parts = node.name.strip("/").split("/")
        if node.op_type == "Clip" and len(node.input) > 2 and node.input[2] and len(parts) > 2:
            out.add(parts[1])
    return out


@pytest.mark.parametrize("text", ["textcnn", "lstm"])
def test_exported_graph_builds_each_mask_once_and_pools_in_one_node(text: str, tmp_path: Path) -> None:
    """On ONNX Runtime a small student's batch-1 latency is mostly per-node cost, so the graph's size
    is pinned: one frame mask per sequence branch (not one per conv stage), the image's grid pool as
    one AveragePool (not a slice and a mean per bin), no If node, and a text CNN without an LSTM."""
    torch.manual_seed(0)
    spec = model_spec("tiny", modalities=ALL, num_classes=3, vocab_size=VOCAB, n_mels=MELS,
                      encoders={"image": {"name": "cnn", "kwargs": {"grid": 2}}, "text": {"name": text},
                                "audio": {"name": "conv1d", "kwargs": {"channels": [8, 8, 8]}}})
    model = build_model(spec).eval()
    info = export_onnx(model, tmp_path / "m.onnx", make_batch(4))
    ops = _branch_ops(info.path)
    assert ops["audio"].count("Range") == 1 and ops["audio"].count("MaxPool") == 6  # 3 stages x (data, mask)
    assert ops["image"].count("AveragePool") == 1 and "Slice" not in ops["image"]
    assert "If" not in [op for branch in ops.values() for op in branch]
    # The conv branches' masks need no upper clamp on the lengths (a Clip whose max is read from
    # the input's shape through Shape/Gather/Cast); the LSTM still clamps, since it indexes the last step.
    clamped = _upper_clipped_branches(info.path)
    assert "audio" not in clamped and ops["audio"].count("Cast") <= 2  # the Range bound, the float mask
    if text == "textcnn":
        assert ops["text"].count("Range") == 1 and ops["text"].count("Conv") == 1
        assert "LSTM" not in ops["text"] and ops["text"].count("Cast") <= 2 and "text" not in clamped
    else:
        assert "text" in clamped
    # Each modality's pooled vector is masked by its presence once (by the model), not again by
    # the fusion, and a bool presence input is not cast to bool first.
    assert ops["fusion"].count("Mul") == 0 and ops[""].count("Mul") == 3
    assert ops[""].count("Cast") == 3
    other = make_batch(3, steps=5, frames=13, seed=3)
    assert np.abs(ort_logits(info.path, other, info) - eager_logits(model, other)).max() < 1e-4
