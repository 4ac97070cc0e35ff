"""Structured pruning: physical shrinking, spec round trip through save/load, ratios, importance, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mmdistill.compression.prune_spec import branch_macs
from mmdistill.data.batch import drop_modalities
from mmdistill.errors import CheckpointError, ConfigError, DataError
from mmdistill.evaluation.flops import count_macs
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.checkpoint import count_parameters, load_model, save_model
from mmdistill.models.multimodal import MultimodalModel

Half = tuple[MultimodalModel, dict[str, Any], Any]

pytest.importorskip("torch_pruning")
from mmdistill.compression.prune import prune_structured  # noqa: E402

ALL = ("image", "text", "audio")
VOCAB, MELS = 40, 16


def make_batch(batch: int = 6, modalities: tuple[str, ...] = ALL, seed: int = 0) -> dict[str, Any]:
    """A hand-built batch per mmdistill.data.batch (12x12 images, 8 tokens, 20 frames)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (batch,), generator=g)
    ids = [f"s{i}" for i in range(batch)]
    out: dict[str, Any] = {"id": ids, "label": labels, "lengths": {}, "present": {}}
    if "image" in modalities:
        out["image"] = torch.randn(batch, 1, 12, 12, generator=g)
    if "text" in modalities:
        lengths = torch.randint(1, 9, (batch,), generator=g)
        out["text"] = torch.randint(1, VOCAB, (batch, 8), generator=g).masked_fill(
            torch.arange(8)[None] >= lengths[:, None], 0)
        out["lengths"]["text"] = lengths
    if "audio" in modalities:
        lengths = torch.randint(4, 21, (batch,), generator=g)
        audio = torch.randn(batch, MELS, 20, generator=g)
        out["audio"] = audio * (torch.arange(20)[None] < lengths[:, None]).unsqueeze(1)
        out["lengths"]["audio"] = lengths
    for m in modalities:
        out["present"][m] = torch.ones(batch, dtype=torch.bool)
    return out


def make_model(preset: str = "tiny", modalities: tuple[str, ...] = ALL, **kw: Any) -> MultimodalModel:
    torch.manual_seed(0)
    spec = model_spec(preset, modalities=modalities, num_classes=4, vocab_size=VOCAB, n_mels=MELS, **kw)
    model = build_model(spec).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong BN slice would show
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return model


def assert_roundtrip(model: MultimodalModel, tmp_path: Path, **kw: Any) -> Any:
    """Prune, save, load: same logits (1e-6), fewer parameters, spec widths equal to the modules'."""
    batch = make_batch()
    report = prune_structured(model, batch, **kw)
    pruned = report.model.eval()
    save_model(pruned, tmp_path / "pruned")
    loaded, _ = load_model(tmp_path / "pruned")
    with torch.no_grad():
        other = make_batch(batch=3, seed=7)
        for b in (batch, other):
            torch.testing.assert_close(loaded(b).logits, pruned(b).logits, atol=1e-6, rtol=0)
    assert report.params_after == count_parameters(loaded) < report.params_before == count_parameters(model)
    for branch in report.channels.values():
        for key, (before, after) in branch.items():
            assert after < before, key
    return report


@pytest.fixture(scope="module")
def half() -> Half:
    """The tiny model (concat fusion) and its 50% magnitude pruning, shared by several tests."""
    model, batch = make_model(), make_batch()
    return model, batch, prune_structured(model, batch, ratio=0.5)


@pytest.mark.parametrize("preset", ["teacher", "student"])
def test_presets_roundtrip_through_save_and_load(preset: str, tmp_path: Path) -> None:
    model = make_model(preset)
    report = assert_roundtrip(model, tmp_path, ratio=0.5)
    kwargs = report.model.spec["encoders"]["image"]["kwargs"]
    base = model.spec["encoders"]["image"]["kwargs"]
    assert kwargs["channels"] == [c - c // 2 for c in base["channels"]]
    assert kwargs["out_dim"] == base["out_dim"] // 2
    assert report.model.spec["fusion"]["kwargs"]["dim"] == model.spec["fusion"]["kwargs"]["dim"] // 2
    # LSTM widths are never pruned (torch-pruning cannot): only the text projection shrinks.
    text, old_text = report.model.spec["encoders"]["text"]["kwargs"], model.spec["encoders"]["text"]["kwargs"]
    assert (text["embed_dim"], text["hidden"]) == (old_text["embed_dim"], old_text["hidden"])
    if preset == "teacher":
        assert report.model.spec["head"]["kwargs"]["hidden"] == 256


def test_concat_roundtrip(half: Half, tmp_path: Path) -> None:
    model, batch, report = half
    save_model(report.model, tmp_path / "p")
    loaded, _ = load_model(tmp_path / "p")
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, report.model.eval()(batch).logits, atol=1e-6, rtol=0)
    assert report.channels["fusion"]["fusion.kwargs.dim"] == [16, 8]
    assert count_parameters(loaded) == report.params_after < report.params_before


@pytest.mark.parametrize(
    ("fusion", "image", "audio", "text"),
    [("sum", "mlp", "crnn", "transformer"), ("gated", "cnn", "crnn", "lstm"),
     ("attention", "cnn", "conv1d", "transformer"), ("concat", "cnn", "conv1d", "textcnn")],
)
def test_fusions_and_encoder_kinds_roundtrip(fusion: str, image: str, audio: str, text: str,
                                             tmp_path: Path) -> None:
    encoders: dict[str, Any] = {"audio": {"name": audio, "kwargs": {"channels": [8, 8]}},
                                "text": {"name": text}}
    if image == "mlp":
        encoders["image"] = {"name": image, "kwargs": {"image_size": 12, "hidden": [16, 8]}}
    report = assert_roundtrip(make_model(encoders=encoders, fusion={"name": fusion}), tmp_path, ratio=0.5)
    spec = report.model.spec
    assert spec["fusion"]["kwargs"]["dim"] == 8
    # The CRNN's last conv sets the GRU's input width, which stays fixed.
    assert spec["encoders"]["audio"]["kwargs"]["channels"] == ([4, 8] if audio == "crnn" else [4, 4])
    if image == "mlp":
        assert spec["encoders"]["image"]["kwargs"]["hidden"] == [8, 4]
    if text == "textcnn":  # every conv stage of the text encoder narrows (an LSTM's width stays fixed)
        assert spec["encoders"]["text"]["kwargs"]["channels"] == [4]
    if fusion == "attention":  # the key/value width stays split into equal heads
        fused = report.model.fusion
        assert fused.key.out_features == fused.value.out_features == 8 and fused.out_dim % fused.heads == 0


def test_branch_ratio_changes_only_that_encoder() -> None:
    model = make_model()
    report = prune_structured(model, make_batch(), ratio=0.0, branch_ratios={"image": 0.5})
    old, new = model.state_dict(), report.model.state_dict()
    assert old.keys() == new.keys()
    changed = {k for k in old if old[k].shape != new[k].shape}
    # The image encoder shrinks; only the fusion's input columns that read it follow.
    assert changed and all(k.startswith("encoders.image.") or k == "fusion.proj.weight" for k in changed)
    for k in old:
        if not (k.startswith("encoders.image.") or k.startswith("fusion.proj.weight")):
            assert torch.equal(old[k], new[k]), k
    assert set(report.channels) == {"image", "text", "audio", "fusion"}
    assert report.channels["text"]["encoders.text.kwargs.out_dim"] == [16, 16]
    assert report.ratios == {"image": 0.5, "text": 0.0, "audio": 0.0, "fusion": 0.0, "head": 0.0}


def test_half_ratio_roughly_halves_macs_of_pruned_branches(half: Half) -> None:
    _, _, report = half
    for branch in ("image", "audio", "fusion", "head"):
        before, after = report.macs_before[branch], report.macs_after[branch]
        assert 0 < after <= 0.55 * before, (branch, before, after)
    # Hand count per sample for the text branch: biLSTM 2 dirs x 8 steps x 4 gates x (4 + 8) x 8, fixed,
    # plus the projection 2*16 -> 16, pruned to 2*16 -> 8.
    lstm = 2 * 8 * 4 * (4 + 8) * 8
    assert (report.macs_before["text"], report.macs_after["text"]) == (lstm + 32 * 16, lstm + 32 * 8)
    assert report.macs_before["total"] == sum(v for k, v in report.macs_before.items() if k != "total")


def test_missing_modalities_still_work_after_pruning(half: Half) -> None:
    pruned = half[2].model.eval()
    batch = make_batch()
    rows = torch.tensor([True, False, True, False, False, True])
    with torch.no_grad():
        for m in ALL:
            partial = {**batch, "present": {**batch["present"], m: ~rows}}
            removed = pruned(drop_modalities(batch, [m]))
            torch.testing.assert_close(pruned(partial).logits[rows], removed.logits[rows])
            assert (removed.features[f"{m}.pooled"] == 0).all()
            assert removed.features[f"{m}.pooled"].shape[1] == pruned.feature_dims()[f"{m}.pooled"]


def test_magnitude_removes_the_zeroed_channels_exactly() -> None:
    model = make_model(head={"name": "mlp"})
    with torch.no_grad():  # units 0..7 of the head's hidden layer are dead (ReLU(0) = 0)
        model.head.net[0].weight[:8] = 0
        model.head.net[0].bias[:8] = 0
        conv = model.encoders["image"].stages[0][0]
        conv.weight[:4] *= 1e-3  # the 4 smallest image filters of the first conv
    kept_filters = conv.weight[4:].clone()
    batch = make_batch()
    report = prune_structured(model, batch, ratio=0.0, branch_ratios={"head": 0.5, "image": 0.5})
    torch.testing.assert_close(report.model.encoders["image"].stages[0][0].weight, kept_filters)
    with torch.no_grad():
        head_only = prune_structured(model, batch, ratio=0.0, branch_ratios={"head": 0.5}).model
        torch.testing.assert_close(head_only(batch).logits, model(batch).logits, atol=1e-6, rtol=0)
    assert head_only.spec["head"]["kwargs"]["hidden"] == 8


def test_taylor_importance_runs_and_differs_from_magnitude(
    half: Half
) -> None:
    model, batch, magnitude = half
    taylor = prune_structured(model, batch, ratio=0.5, importance="taylor",
                              taylor_batches=[batch, make_batch(seed=3)])
    assert taylor.channels == magnitude.channels and taylor.importance == "taylor"
    t, m = taylor.model.state_dict(), magnitude.model.state_dict()
    assert any(not torch.equal(t[k], m[k]) for k in t)
    assert torch.isfinite(taylor.model(batch).logits).all()
    assert all(p.grad is None for p in taylor.model.parameters())


def test_input_model_is_not_changed_and_round_to_is_respected() -> None:
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = prune_structured(model, make_batch(), ratio=0.3, round_to=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(after % 4 == 0 for b in report.channels.values() for _, after in b.values())
    assert report.channels["image"]["encoders.image.kwargs.channels[0]"] == [8, 4]  # 8 - floor(2.4) = 6 -> 4
    # A width of one multiple or more never drops below one multiple: 8 -> 8 at round_to 8, ratio 0.9.
    aligned = prune_structured(model, make_batch(), ratio=0.9, round_to=8)
    assert aligned.channels["image"]["encoders.image.kwargs.channels[0]"] == [8, 8]
    assert aligned.channels["fusion"]["fusion.kwargs.dim"] == [16, 8]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ratio": 1.0}, r"ratio: must be a number in \[0, 1\)"),
        ({"ratio": -0.1}, r"ratio: must be a number in \[0, 1\)"),
        ({"branch_ratios": {"image": 1.5}}, r"branch_ratios\['image'\]: must be"),
        ({"branch_ratios": {"imgae": 0.5}}, r"unknown branch 'imgae'; did you mean 'image'\?"),
        ({"round_to": 16}, r"encoders.image.kwargs.channels\[0\] \(width 8\).*would leave 0 channels"),
        ({"importance": "magnitud"}, r"did you mean 'magnitude'\?"),
        ({"round_to": 0}, r"round_to: must be None or a positive integer"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_fix(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prune_structured(make_model(), make_batch(), **kwargs)


def test_bad_model_or_batch_gives_clear_errors() -> None:
    model = make_model(modalities=("image", "text"))
    with pytest.raises(ConfigError, match="the model has no 'audio' encoder"):
        prune_structured(model, make_batch(), branch_ratios={"audio": 0.5})
    with pytest.raises(DataError, match=r"example_batch has no \['text'\]"):
        prune_structured(model, make_batch(modalities=("image",)))
    model.spec = None
    with pytest.raises(CheckpointError, match="has no spec"):
        prune_structured(model, make_batch())


def test_missing_torch_pruning_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from mmdistill.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # makes `import torch_pruning` fail
    with pytest.raises(MissingDependencyError, match=r"torch-pruning.*mmdistill\[prune\]"):
        prune_structured(make_model(), make_batch())


def test_branch_macs_is_the_flop_counter_per_sample_under_branch_keys() -> None:
    model = make_model(fusion={"name": "attention"})
    batch = make_batch(batch=3)
    macs = branch_macs(model, batch)
    report = count_macs(model, batch)
    names = {m: f"encoders.{m}" for m in ALL} | {"fusion": "fusion", "head": "head"}
    assert macs == {**{k: report.by_branch[v] // 3 for k, v in names.items()}, "total": report.total // 3}
    assert macs["total"] == sum(v for k, v in macs.items() if k != "total")
    # Per sample: one row of the same batch costs the same.
    one = {k: v[:1] if k in ALL else v for k, v in batch.items()}
    one["lengths"] = {m: v[:1] for m, v in batch["lengths"].items()}
    one["present"] = {m: v[:1] for m, v in batch["present"].items()}
    one["label"] = batch["label"][:1]
    assert branch_macs(model, one) == macs
