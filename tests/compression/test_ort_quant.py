"""ONNX Runtime int8: static QDQ and dynamic quantization of an exported student, per-branch fp32."""

from __future__ import annotations

import builtins
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from _helpers import train_briefly  # noqa: E402
from mmdistill.compression.ort_quant import (  # noqa: E402
    QuantInfo,
    calibration_feeds,
    count_quantized_ops,
    float_compute_nodes,
    nodes_of_branch,
    quantize_dynamic_onnx,
    quantize_static_onnx,
)
from mmdistill.data.batch import drop_modalities  # noqa: E402
from mmdistill.data.collate import collate  # noqa: E402
from mmdistill.errors import ConfigError, DataError, MissingDependencyError  # noqa: E402
from mmdistill.export.onnx import export_onnx, load_export_info, onnx_feeds  # noqa: E402
from mmdistill.models.builders import build_model, model_spec  # noqa: E402
from mmdistill.models.multimodal import MultimodalModel  # noqa: E402

K, VOCAB, MELS, SIDE = 4, 60, 16, 16


def synthetic_samples(n: int, seed: int) -> list[dict[str, Any]]:
    """Separable 4-class data: a class image pattern, class token range, class mel band (plus noise)."""
    patterns = torch.randn(K, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(123))
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        k = i % K
        t_len = int(torch.randint(3, 9, (1,), generator=g))
        frames = int(torch.randint(10, 21, (1,), generator=g))
        audio = torch.randn(MELS, frames, generator=g) * 0.5
        audio[4 * k : 4 * k + 4] += 1.5
        samples.append({
            "id": f"{seed}-{i}",
            "label": k,
            "image": patterns[k] + 0.7 * torch.randn(1, SIDE, SIDE, generator=g),
            "text": torch.randint(1 + 10 * k, 11 + 10 * k, (t_len,), generator=g),
            "audio": audio,
        })
    return samples


def batches_of(samples: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    return [collate(samples[i : i + size]) for i in range(0, len(samples), size)]


def trained_model() -> MultimodalModel:
    """A ~235k-parameter, weight-dominated student trained for a few steps on the synthetic data."""
    torch.manual_seed(0)
    spec = model_spec(
        "student", modalities=("image", "text", "audio"), num_classes=K, vocab_size=VOCAB, n_mels=MELS,
        encoders={"image": {"kwargs": {"channels": [32, 64], "out_dim": 128}},
                  "text": {"kwargs": {"embed_dim": 16, "hidden": 16, "out_dim": 64}},
                  "audio": {"kwargs": {"channels": [64, 96], "out_dim": 128}}},
        fusion={"kwargs": {"dim": 384}},
    )
    return train_briefly(build_model(spec), batches_of(synthetic_samples(128, seed=1), 32))


def ort_logits(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], f)[0] for f in feeds])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fp32 export, calibration feeds (one batch without audio), held-out feeds and labels."""
    root = tmp_path_factory.mktemp("ortq")
    model = trained_model()
    train = batches_of(synthetic_samples(96, seed=2), 32)
    info = export_onnx(model, root / "student.onnx", train[0])
    # A calibration batch lacking audio: fed as zeros with audio_present=False, must not break ranges.
    calib_batches = [*train, drop_modalities(train[0], ["audio"])]
    calib = calibration_feeds(calib_batches, info.input_names, input_shapes=info.input_shapes)
    test = batches_of(synthetic_samples(64, seed=3), 16)
    test_feeds = [onnx_feeds(b, info.input_names) for b in test]
    labels = np.concatenate([b["label"].numpy() for b in test])
    fp32 = ort_logits(root / "student.onnx", test_feeds)
    with torch.no_grad():
        eager = np.concatenate([model(b).logits.numpy() for b in test])
    return {"root": root, "path": root / "student.onnx", "calib": calib, "test": test_feeds, "labels": labels,
            "fp32": fp32, "eager": eager}


@pytest.fixture(scope="module")
def static_int8(exported: dict[str, Any]) -> QuantInfo:
    return quantize_static_onnx(exported["path"], exported["root"] / "student.int8.onnx", exported["calib"])


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def test_fixture_model_is_trained_and_export_matches_eager(exported: dict[str, Any]) -> None:
    assert float((exported["fp32"].argmax(1) == exported["labels"]).mean()) >= 0.9  # agreement is meaningful
    assert np.abs(exported["fp32"] - exported["eager"]).max() < 1e-4


def test_static_qdq_shrinks_agrees_and_records_settings(
    exported: dict[str, Any], static_int8: QuantInfo
) -> None:
    info = static_int8
    int8 = ort_logits(Path(info.out_path), exported["test"])
    assert agreement(int8, exported["fp32"]) >= 0.9
    assert float((int8.argmax(1) == exported["labels"]).mean()) >= 0.85
    assert info.bytes_before == exported["path"].stat().st_size
    assert info.bytes_after == Path(info.out_path).stat().st_size
    assert info.size_ratio >= 2.5, info.to_dict()
    ops = info.quantized_ops
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > ops["QuantizeLinear"]  # weights: DQ only
    assert ops == count_quantized_ops(info.out_path)
    # Every Conv and Gemm computes in int8; only the LSTMs (no static QDQ kernel) stay float.
    floats = float_compute_nodes(info.out_path, ("Conv", "Gemm", "LSTM"))
    assert floats and all(name.endswith("/LSTM") for name in floats)
    assert info.settings["calibration_batches"] == 4 and info.settings["calibration_rows"] == 128
    assert info.settings["per_channel"] is True and info.settings["activation_type"] == "QUInt8"
    side = json.loads(Path(f"{info.out_path}.json").read_text())
    assert side["quantization"]["mode"] == "static" and side["input_names"] == load_export_info(
        exported["path"]).input_names
    assert load_export_info(info.out_path).num_classes == K


def test_dynamic_default_ops_leave_conv_in_float(exported: dict[str, Any]) -> None:
    info = quantize_dynamic_onnx(exported["path"], exported["root"] / "student.dyn.onnx")
    fp32_ops = [n.op_type for n in onnx.load(str(exported["path"])).graph.node]
    convs = [n.name for n in onnx.load(info.out_path).graph.node if n.op_type == "Conv"]
    assert len(convs) == fp32_ops.count("Conv") >= 4 and set(convs) <= set(float_compute_nodes(info.out_path))
    assert "ConvInteger" not in info.quantized_ops
    assert info.quantized_ops["MatMulInteger"] == fp32_ops.count("Gemm") == 5  # one per Linear
    assert info.quantized_ops["DynamicQuantizeLSTM"] == 2
    assert 1.5 < info.size_ratio < 4.0
    assert agreement(ort_logits(Path(info.out_path), exported["test"]), exported["fp32"]) >= 0.9


def test_dynamic_with_conv_warns_and_makes_conv_integer(exported: dict[str, Any]) -> None:
    with pytest.warns(UserWarning, match="ConvInteger"):
        info = quantize_dynamic_onnx(exported["path"], exported["root"] / "conv.dyn.onnx", ("Conv", "MatMul"))
    fp32_ops = [n.op_type for n in onnx.load(str(exported["path"])).graph.node]
    assert info.quantized_ops["ConvInteger"] == fp32_ops.count("Conv")
    assert info.settings["op_types"] == ["Conv", "MatMul"]


def test_nodes_of_branch_partitions_the_exported_graph(exported: dict[str, Any]) -> None:
    branches = ("image", "text", "audio", "fusion", "head")
    per_branch = {b: nodes_of_branch(exported["path"], b) for b in branches}
    assert all(per_branch.values())
    names = [n for ns in per_branch.values() for n in ns]
    assert len(names) == len(set(names))  # disjoint
    assert all(n.startswith("/model/image/") for n in per_branch["image"])
    assert nodes_of_branch(exported["path"], "encoders.text") == per_branch["text"]
    ops = {n.name: n.op_type for n in onnx.load(str(exported["path"])).graph.node}
    assert sorted(ops[n] for n in per_branch["head"] if ops[n] == "Gemm") == ["Gemm"]
    assert sum(ops[n] == "Conv" for n in per_branch["audio"]) == 2


def test_nodes_of_branch_on_a_hand_built_graph(tmp_path: Path) -> None:
    """Depth detection: ``/fusion/image/Gemm`` (a per-modality layer inside the fusion) is not image."""
    h = onnx.helper
    names = ["/image/stages/Conv", "/fusion/image/Gemm", "/fusion/Relu", "/head/fc/Gemm", "Identity_3"]
    nodes = [h.make_node("Identity", [f"t{i}"], [f"t{i + 1}"], name=n) for i, n in enumerate(names)]
    x = h.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, [1])
    y = h.make_tensor_value_info(f"t{len(names)}", onnx.TensorProto.FLOAT, [1])
    onnx.save(h.make_model(h.make_graph(nodes, "g", [x], [y])), str(tmp_path / "g.onnx"))
    assert nodes_of_branch(tmp_path / "g.onnx", "image") == ["/image/stages/Conv"]
    assert nodes_of_branch(tmp_path / "g.onnx", "fusion") == ["/fusion/image/Gemm", "/fusion/Relu"]
    assert nodes_of_branch(tmp_path / "g.onnx", "audio") == []


def test_count_quantized_ops_on_a_hand_built_graph(tmp_path: Path) -> None:
    h = onnx.helper
    ops = ["QuantizeLinear", "DequantizeLinear", "DequantizeLinear", "MatMulInteger", "Relu", "QLinearConv"]
    nodes = [h.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=f"n{i}") for i, op in enumerate(ops)]
    x = h.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, [1])
    y = h.make_tensor_value_info(f"t{len(ops)}", onnx.TensorProto.FLOAT, [1])
    onnx.save(h.make_model(h.make_graph(nodes, "g", [x], [y])), str(tmp_path / "q.onnx"))
    assert count_quantized_ops(tmp_path / "q.onnx") == {
        "DequantizeLinear": 2, "MatMulInteger": 1, "QLinearConv": 1, "QuantizeLinear": 1}


def test_float_compute_nodes_looks_at_the_weight_input(tmp_path: Path) -> None:
    """int8 in QDQ means a DequantizeLinear feeds the weight; a quantized activation alone is not enough."""
    h = onnx.helper
    nodes = [
        h.make_node("DequantizeLinear", ["wq", "s"], ["w"], name="dq_w"),
        h.make_node("DequantizeLinear", ["xq", "s"], ["x"], name="dq_x"),
        h.make_node("Gemm", ["x", "w"], ["a"], name="int8_gemm"),
        h.make_node("Gemm", ["x", "w_float"], ["b"], name="float_gemm"),
        h.make_node("LSTM", ["x", "w_float", "r"], ["c"], name="float_lstm"),
        h.make_node("Gather", ["w", "ids"], ["d"], name="int8_gather"),
        h.make_node("Gather", ["w_float", "ids"], ["e"], name="float_gather"),
    ]
    x = h.make_tensor_value_info("xq", onnx.TensorProto.FLOAT, [1])
    y = h.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])
    onnx.save(h.make_model(h.make_graph(nodes, "g", [x], [y])), str(tmp_path / "w.onnx"))
    assert float_compute_nodes(tmp_path / "w.onnx") == ["float_gemm", "float_lstm", "float_gather"]
    assert float_compute_nodes(tmp_path / "w.onnx", ("Gemm",)) == ["float_gemm"]


def test_fp32_image_branch_keeps_its_conv_and_gemm_in_float(exported: dict[str, Any]) -> None:
    info = quantize_static_onnx(exported["path"], exported["root"] / "img32.int8.onnx", exported["calib"][:2],
                                fp32_branches=("image",))
    floats = set(float_compute_nodes(info.out_path, ("Conv", "Gemm")))
    graph = onnx.load(info.out_path).graph
    compute = [n.name for n in graph.node if n.op_type in ("Conv", "Gemm")]
    image = {n for n in compute if n.startswith("/model/image/")}
    audio = {n for n in compute if n.startswith("/model/audio/")}
    assert image and image <= floats
    assert audio and not audio & floats
    # Excluded: the image nodes left after pre-processing (it folds some Constants away).
    assert image <= set(info.excluded_nodes) <= set(nodes_of_branch(exported["path"], "image"))
    assert info.settings["fp32_branches"] == ["image"]
    assert agreement(ort_logits(Path(info.out_path), exported["test"]), exported["fp32"]) >= 0.9


def test_exclude_nodes_and_feeds_of_other_dtypes(exported: dict[str, Any]) -> None:
    """float64 images, int32 lengths and uint8 masks are cast to the graph's dtypes for calibration."""
    feed = exported["calib"][0]
    odd = {k: (v.astype(np.float64) if v.dtype == np.float32 else v.astype(np.int32) if v.dtype == np.int64
               else v.astype(np.uint8)) for k, v in feed.items()}
    head = [n for n in nodes_of_branch(exported["path"], "head") if n.endswith("/Gemm")]
    info = quantize_static_onnx(exported["path"], exported["root"] / "head32.onnx", [odd], exclude_nodes=head)
    assert head == ["/model/head/fc/Gemm"] and info.excluded_nodes == head
    assert set(float_compute_nodes(info.out_path, ("Gemm",))) == set(head)
    assert agreement(ort_logits(Path(info.out_path), exported["test"]), exported["fp32"]) >= 0.9
    with pytest.raises(ConfigError, match="no node named.*'/model/head/fc/Gemmm'"):
        quantize_dynamic_onnx(exported["path"], exported["root"] / "x.onnx", exclude_nodes=[head[0] + "m"])


def test_calibration_feeds_max_batches_and_validation(exported: dict[str, Any]) -> None:
    batches = batches_of(synthetic_samples(12, seed=4), 4)
    names = load_export_info(exported["path"]).input_names
    feeds = calibration_feeds(batches, names, max_batches=2)
    assert len(feeds) == 2 and list(feeds[0]) == names
    assert feeds[0]["text_present"].dtype == np.bool_ and feeds[0]["text"].dtype == np.int64
    with pytest.raises(ValueError, match="max_batches"):
        calibration_feeds(batches, names, max_batches=0)


def test_errors_name_the_problem(exported: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        quantize_static_onnx(tmp_path / "nope.onnx", tmp_path / "o.onnx", exported["calib"])
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        quantize_dynamic_onnx(tmp_path / "nope.onnx", tmp_path / "o.onnx")
    with pytest.raises(DataError, match="no feeds"):
        quantize_static_onnx(exported["path"], tmp_path / "o.onnx", iter([]))
    partial = [{k: v for k, v in exported["calib"][0].items() if k != "audio_present"}]
    with pytest.raises(DataError, match="audio_present"):
        quantize_static_onnx(exported["path"], tmp_path / "o.onnx", partial)
    with pytest.raises(ConfigError, match="activation_type.*'int8'"):
        quantize_static_onnx(exported["path"], tmp_path / "o.onnx", exported["calib"], activation_type="int8")
    with pytest.raises(ConfigError, match="calibrate_method"):
        quantize_static_onnx(exported["path"], tmp_path / "o.onnx", exported["calib"], calibrate_method="KL")
    with pytest.raises(ConfigError, match="'vision'"):
        quantize_dynamic_onnx(exported["path"], tmp_path / "o.onnx", fp32_branches=("vision",))
    with pytest.raises(ConfigError, match="non-empty"):
        quantize_dynamic_onnx(exported["path"], tmp_path / "o.onnx", ())
    assert not (tmp_path / "o.onnx").exists()


def test_missing_onnxruntime_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_ort(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("onnxruntime"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    monkeypatch.delitem(sys.modules, "onnxruntime.quantization", raising=False)
    with pytest.raises(MissingDependencyError, match=r"onnxruntime.*mmdistill\[onnx\]"):
        quantize_dynamic_onnx(tmp_path / "m.onnx", tmp_path / "o.onnx")
