"""The ``mlp`` image encoder: shapes, hand-written reference, registry, spec round trip, training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mmdistill.errors import ConfigError, DataError
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import count_parameters, load_model, save_model
from mmdistill.models.encoders.image import MLPImageEncoder
from mmdistill.models.registries import ENCODERS
from mmdistill.training.steps import supervised_step


def mlp_spec(hidden: list[int], dim: int, image_size: int = 6, classes: int = 3) -> dict:
    """An image-only spec ``C*H*W - hidden - dim - classes`` (concat fusion = last hidden layer)."""
    return model_spec(
        "tiny", modalities=["image"], num_classes=classes, vocab_size=1,
        encoders={"image": {"name": "mlp", "kwargs": {"image_size": image_size, "hidden": hidden}}},
        fusion={"name": "concat", "kwargs": {"dim": dim}}, head={"name": "linear", "kwargs": {}},
    )


def image_batch(n: int = 4, size: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"id": [str(i) for i in range(n)], "label": torch.randint(0, 3, (n,), generator=g),
            "image": torch.randn(n, 1, size, size, generator=g),
            "present": {"image": torch.ones(n, dtype=torch.bool)}, "lengths": {}}


def test_output_shapes_and_out_dim() -> None:
    enc = MLPImageEncoder(in_channels=3, image_size=(5, 4), hidden=[7, 2])
    out = enc(torch.randn(6, 3, 5, 4))
    assert enc.in_features == 60 and enc.out_dim == 2
    assert out.pooled.shape == (6, 2) and out.tokens is None and out.mask is None
    assert (out.pooled >= 0).all()  # the last hidden layer is a ReLU output


def test_matches_hand_written_mlp() -> None:
    torch.manual_seed(0)
    enc = MLPImageEncoder(image_size=4, hidden=[5, 3], dropout=0.5, input_dropout=0.2).eval()
    x = torch.randn(2, 1, 4, 4)
    (l1, l2) = [m for m in enc.modules() if isinstance(m, nn.Linear)]
    h = torch.relu(x.reshape(2, 16) @ l1.weight.T + l1.bias)
    expected = torch.relu(h @ l2.weight.T + l2.bias)
    torch.testing.assert_close(enc(x).pooled, expected)  # eval mode: dropout is the identity
    assert count_parameters(enc) == 16 * 5 + 5 + 5 * 3 + 3


def test_no_hidden_layers_passes_pixels_through() -> None:
    enc = MLPImageEncoder(image_size=3, hidden=[])
    x = torch.randn(2, 1, 3, 3)
    assert enc.out_dim == 9 and count_parameters(enc) == 0
    assert torch.equal(enc(x).pooled, x.reshape(2, 9))


def test_dropout_is_active_only_in_training() -> None:
    enc = MLPImageEncoder(image_size=8, hidden=[64], input_dropout=0.5)
    x = torch.ones(4, 1, 8, 8)
    torch.manual_seed(0)
    assert not torch.equal(enc.train()(x).pooled, enc.eval()(x).pooled)
    assert torch.equal(enc(x).pooled, enc(x).pooled)


def test_registered_as_image_encoder() -> None:
    assert "mlp" in ENCODERS.names()
    entry = ENCODERS.entry("mlp")
    assert entry.obj is MLPImageEncoder and entry.meta["modality"] == "image"
    assert entry.description.startswith("Flatten the image")


def test_spec_round_trip_builds_the_exact_mlp(tmp_path: Path) -> None:
    spec = mlp_spec(hidden=[10], dim=8)
    assert json.loads(json.dumps(spec)) == spec
    assert spec["encoders"]["image"]["kwargs"]["in_channels"] == 1  # injected by model_spec
    torch.manual_seed(0)
    model = build_model(spec).eval()
    # 36-10-8-3: encoder Linear(36, 10), fusion Linear(10, 8), head Linear(8, 3).
    assert count_parameters(model) == (36 * 10 + 10) + (10 * 8 + 8) + (8 * 3 + 3)
    batch = image_batch()
    save_model(model, tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.spec == spec
    torch.testing.assert_close(loaded(batch).logits, model(batch).logits, rtol=0, atol=0)
    assert build_model(json.loads(json.dumps(spec))).encoders["image"].out_dim == 10


def test_input_and_constructor_errors_name_the_key() -> None:
    enc = MLPImageEncoder(image_size=28, hidden=[4])
    with pytest.raises(DataError, match=r"encoders.image.kwargs.image_size"):
        enc(torch.randn(2, 1, 8, 8))
    with pytest.raises(DataError, match=r"encoders.image.kwargs.in_channels"):
        enc(torch.randn(2, 3, 28, 28))
    with pytest.raises(DataError, match=r"\[B, C, H, W\]"):
        enc(torch.randn(2, 784))
    with pytest.raises(ValueError, match="hidden"):
        MLPImageEncoder(hidden=[8, 0])
    with pytest.raises(ValueError, match="image_size"):
        MLPImageEncoder(image_size=(28, 28, 1))
    with pytest.raises(ValueError, match="input_dropout"):
        MLPImageEncoder(input_dropout=1.0)
    bad = mlp_spec(hidden=[4], dim=4)
    bad["encoders"]["image"]["kwargs"]["widths"] = [4]
    with pytest.raises(ConfigError, match=r"kwargs.widths.*accepted: in_channels, image_size, hidden"):
        build_model(bad)


def test_trains_on_a_tiny_synthetic_set() -> None:
    """Labels are the quadrant holding the brightest pixel: a few Adam steps must fit most of it."""
    torch.manual_seed(0)
    n, size = 48, 6
    images = torch.rand(n, 1, size, size) * 0.1
    labels = torch.arange(n) % 3
    for i, c in enumerate(labels.tolist()):
        images[i, 0, (c // 2) * 3 + 1, (c % 2) * 3 + 1] = 1.0
    batch = {"id": [str(i) for i in range(n)], "label": labels, "image": images,
             "present": {"image": torch.ones(n, dtype=torch.bool)}, "lengths": {}}
    model = build_model(mlp_spec(hidden=[16], dim=16, image_size=size))
    step = supervised_step()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        out = step(model, batch)
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    assert (model(batch).logits.argmax(-1) == labels).float().mean() == 1.0
