"""torch.ao dynamic int8: Linear/LSTM replaced, outputs close to fp32, saving refused, metadata."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from _helpers import train_briefly
from mmdistill.compression.torch_int8 import (
    METADATA_ATTR,
    TORCH_INT8_METADATA,
    quantization_metadata,
    torch_dynamic_int8,
)
from mmdistill.data.collate import collate
from mmdistill.errors import CheckpointError
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import save_model
from mmdistill.models.multimodal import MultimodalModel

K, VOCAB, MELS = 4, 50, 16


def separable_batch(n: int, seed: int) -> dict[str, Any]:
    """4 classes told apart by an image pattern, a token range and a loud mel band (plus noise)."""
    patterns = torch.randn(K, 1, 16, 16, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        k = i % K
        audio = torch.randn(MELS, 12, generator=g) * 0.5
        audio[4 * k : 4 * k + 4] += 1.5
        samples.append({"id": str(i), "label": k, "audio": audio,
                        "image": patterns[k] + 0.7 * torch.randn(1, 16, 16, generator=g),
                        "text": torch.randint(1 + 10 * k, 11 + 10 * k, (int(3 + i % 5),), generator=g)})
    return collate(samples)


@pytest.fixture(scope="module")
def trained() -> MultimodalModel:
    torch.manual_seed(0)
    spec = model_spec("student", modalities=("image", "text", "audio"), num_classes=K, vocab_size=VOCAB,
                      n_mels=MELS, fusion={"kwargs": {"dim": 96}})
    return train_briefly(build_model(spec), [separable_batch(32, seed=s) for s in range(3)])


def test_linear_and_lstm_layers_are_replaced_and_the_input_kept(trained: MultimodalModel) -> None:
    linears = sum(type(m) is nn.Linear for m in trained.modules())
    lstms = sum(type(m) is nn.LSTM for m in trained.modules())
    assert linears == 5 and lstms == 2
    q = torch_dynamic_int8(trained)
    dyn = torch.ao.nn.quantized.dynamic
    assert sum(type(m) is dyn.Linear for m in q.modules()) == linears
    assert sum(type(m) is dyn.LSTM for m in q.modules()) == lstms
    assert not any(type(m) in (nn.Linear, nn.LSTM) for m in q.modules())
    assert sum(type(m) is nn.Conv2d for m in q.modules()) == 2  # convolutions stay float32
    assert isinstance(q.head.fc.weight(), torch.Tensor) and q.head.fc.weight().dtype == torch.qint8
    # The original is untouched.
    assert type(trained.head.fc) is nn.Linear and trained.head.fc.weight.dtype == torch.float32


def test_outputs_close_to_fp32(trained: MultimodalModel) -> None:
    q = torch_dynamic_int8(trained)
    test = separable_batch(64, seed=11)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # forward itself must not warn
        ref, out = trained(test), q(test)
    assert float((ref.logits.argmax(1) == test["label"]).float().mean()) >= 0.9  # agreement is meaningful
    assert float((out.logits.argmax(1) == ref.logits.argmax(1)).float().mean()) >= 0.95
    rel = (out.logits - ref.logits).norm() / ref.logits.norm()
    assert float(rel) < 0.1
    assert set(out.features) == set(ref.features)


def test_metadata_marks_it_not_deployable(trained: MultimodalModel) -> None:
    q = torch_dynamic_int8(trained)
    meta = quantization_metadata(q)
    assert meta is not None and getattr(q, METADATA_ATTR) == meta
    assert {k: meta[k] for k in ("runtime", "int8", "deployable")} == {
        "runtime": "torch", "int8": "torch.ao dynamic", "deployable": False}
    assert meta["deprecated"] is TORCH_INT8_METADATA["deprecated"] is True
    assert meta["quantized_layers"] == {"Linear": 5, "LSTM": 2}
    assert meta["float_layers_left"] == {"Linear": 0, "LSTM": 0}
    assert quantization_metadata(trained) is None


def test_saving_is_refused_without_pickling(trained: MultimodalModel, tmp_path: Path) -> None:
    q = torch_dynamic_int8(trained)
    with pytest.raises(CheckpointError, match="torch.ao dynamic int8.*pickle"):
        save_model(q, tmp_path / "int8")
    assert not (tmp_path / "int8").exists()
    with pytest.raises(CheckpointError, match="quantize_static_onnx"):
        q.state_dict()
    save_model(trained, tmp_path / "fp32")  # the float model still saves
    assert (tmp_path / "fp32" / "model.safetensors").is_file()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="no nn.Linear or nn.LSTM"):
        torch_dynamic_int8(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match="qint8"):
        torch_dynamic_int8(nn.Linear(2, 2), dtype=torch.quint8)
