"""MultimodalModel: any subset of modalities, absent rows, extra modalities, multi-task, ONNX export."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from mmdistill.data.batch import drop_modalities
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.multimodal import MultimodalModel

ALL = ("image", "text", "audio")
VOCAB, MELS = 60, 16


def make_batch(batch: int = 5, modalities: tuple[str, ...] = ALL, seed: int = 0) -> dict[str, Any]:
    """A batch laid out per mmdistill.data.batch, built by hand (no collate)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {
        "id": [f"s{i}" for i in range(batch)],
        "label": torch.randint(0, 4, (batch,), generator=g),
        "lengths": {},
        "present": {},
    }
    if "image" in modalities:
        out["image"] = torch.randn(batch, 1, 12, 12, generator=g)
    if "text" in modalities:
        lengths = torch.randint(1, 9, (batch,), generator=g)
        text = torch.randint(1, VOCAB, (batch, 8), generator=g)
        out["text"] = text.masked_fill(torch.arange(8)[None] >= lengths[:, None], 0)
        out["lengths"]["text"] = lengths
    if "audio" in modalities:
        lengths = torch.randint(4, 21, (batch,), generator=g)
        audio = torch.randn(batch, MELS, 20, generator=g)
        out["audio"] = audio * (torch.arange(20)[None] < lengths[:, None]).unsqueeze(1)
        out["lengths"]["audio"] = lengths
    for m in modalities:
        out["present"][m] = torch.ones(batch, dtype=torch.bool)
    return out


def make_model(fusion: str = "concat", modalities: tuple[str, ...] = ALL, **kw: Any) -> MultimodalModel:
    torch.manual_seed(0)
    spec = model_spec("tiny", modalities=modalities, num_classes=4, vocab_size=VOCAB, n_mels=MELS,
                      fusion={"name": fusion}, **kw)
    return build_model(spec).eval()


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "attention"])
def test_runs_with_every_subset_of_modalities(fusion: str) -> None:
    model = make_model(fusion)
    for r in range(1, 4):
        for subset in itertools.combinations(ALL, r):
            out = model(make_batch(modalities=subset))
            assert out.logits.shape == (5, 4) and torch.isfinite(out.logits).all()
            assert set(out.features) == {"image.pooled", "text.pooled", "audio.pooled", "fused"}
            for m in ALL:
                assert out.features[f"{m}.pooled"].shape == (5, model.feature_dims()[f"{m}.pooled"])
                if m not in subset:
                    assert (out.features[f"{m}.pooled"] == 0).all()


@pytest.mark.parametrize("fusion", ["concat", "sum", "gated", "attention"])
def test_absent_rows_equal_removed_modality(fusion: str) -> None:
    model = make_model(fusion)
    batch = make_batch()
    rows = torch.tensor([True, False, True, False, False])
    for m in ALL:
        partial = {**batch, "present": {**batch["present"], m: ~rows}}
        out = model(partial)
        removed = model(drop_modalities(batch, [m]))
        torch.testing.assert_close(out.logits[rows], removed.logits[rows])
        torch.testing.assert_close(out.features["fused"][rows], removed.features["fused"][rows])
        assert (out.features[f"{m}.pooled"][rows] == 0).all()
        assert (out.features[f"{m}.pooled"][~rows] != 0).any()


def test_all_modalities_absent_in_a_row_gives_no_nan() -> None:
    model = make_model("attention")
    batch = make_batch()
    batch["present"] = {m: torch.tensor([True, True, False, True, True]) for m in ALL}
    out = model(batch)
    assert torch.isfinite(out.logits).all() and (out.features["fused"][2] == 0).all()
    everything_absent = {**batch, "present": {m: torch.zeros(5, dtype=torch.bool) for m in ALL}}
    assert torch.isfinite(model(everything_absent).logits).all()


def test_extra_modalities_are_ignored_and_missing_present_means_all() -> None:
    model = make_model("concat", modalities=("image", "audio"))
    assert model.modalities == ["image", "audio"]
    full = make_batch()
    torch.testing.assert_close(model(full).logits, model(drop_modalities(full, ["text"])).logits)
    no_present = {k: v for k, v in full.items() if k != "present"}
    torch.testing.assert_close(model(no_present).logits, model(full).logits)


def test_training_encodes_only_present_rows() -> None:
    """BatchNorm batch statistics in training come from present rows only."""
    model = make_model("concat", modalities=("image",)).train()
    batch = make_batch()
    rows = torch.tensor([True, False, True, True, False])
    batch["present"]["image"] = rows
    feats, present = model.encode(batch)
    torch.manual_seed(1)
    direct = model.encoders["image"](batch["image"][rows]).pooled
    torch.testing.assert_close(feats["image"].pooled[rows], direct)
    assert (feats["image"].pooled[~rows] == 0).all() and torch.equal(present["image"], rows)


def test_multitask_outputs_and_properties() -> None:
    model = make_model("gated", tasks={"speaker": 3})
    out = model(make_batch())
    assert list(out.task_logits) == ["label", "speaker"]
    assert out.logits is out.task_logits["label"] and out.task_logits["speaker"].shape == (5, 3)
    assert model.num_classes == 4
    assert model.feature_dims()["fused"] == out.features["fused"].shape[1]


def test_onnx_export_matches_eager_with_other_batch_and_lengths(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = make_model("attention", encoders={"audio": {"name": "crnn"}})

    class Wrapper(torch.nn.Module):
        def __init__(self, m: MultimodalModel) -> None:
            super().__init__()
            self.m = m

        def forward(self, image: torch.Tensor, text: torch.Tensor, text_len: torch.Tensor,
                    audio: torch.Tensor, audio_len: torch.Tensor) -> torch.Tensor:
            lengths = {"text": text_len, "audio": audio_len}
            return self.m({"image": image, "text": text, "audio": audio, "lengths": lengths}).logits

    def args(b: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        return b["image"], b["text"], b["lengths"]["text"], b["audio"], b["lengths"]["audio"]

    names = ["image", "text", "text_len", "audio", "audio_len"]
    axes = {"image": {0: "b"}, "text": {0: "b", 1: "t"}, "text_len": {0: "b"}, "audio": {0: "b", 2: "f"},
            "audio_len": {0: "b"}}
    wrapper = Wrapper(model).eval()
    path = str(tmp_path / "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, args(make_batch()), path, dynamo=False, input_names=names, dynamic_axes=axes
        )
    wrapper.eval()  # export restores the training flag it found; keep eval for the reference
    other = make_batch(batch=3, seed=5)
    other["text"], other["lengths"]["text"] = other["text"][:, :6], other["lengths"]["text"].clamp(max=6)
    session = ort.InferenceSession(path)
    got = session.run(None, {n: a.numpy() for n, a in zip(names, args(other), strict=True)})[0]
    with torch.no_grad():
        expected = wrapper(*args(other)).numpy()
    assert abs(got - expected).max() < 1e-4
