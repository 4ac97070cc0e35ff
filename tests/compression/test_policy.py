"""PrecisionPolicy parsing and errors, branch lookup, and the compressed-size model."""

from __future__ import annotations

import math

import pytest
import torch

from _helpers import tiny_model
from mmdistill.compression.policy import (
    PrecisionPolicy,
    branch_of,
    model_branches,
    modules_for,
    quantizable_weights,
    quantized_branches,
    weight_bits_size,
)
from mmdistill.compression.qat import prepare_qat_
from mmdistill.errors import ConfigError
from mmdistill.models.multimodal import MultimodalModel


def make_model(modalities: tuple[str, ...] = ("image", "text", "audio")) -> MultimodalModel:
    return tiny_model(modalities, vocab=40, mels=8)


def test_parse_defaults_and_round_trip() -> None:
    policy = PrecisionPolicy.from_dict({"image": 4, "default": 8}, symmetric=True)
    assert [policy.bits_for(b) for b in ("image", "text", "audio", "fusion", "head")] == [4, 8, 8, 8, 8]
    assert PrecisionPolicy.from_dict({}).bits_for("head") == 32
    assert PrecisionPolicy.uniform(3).bits_for("fusion") == 3
    d = policy.to_dict()
    assert d == {"bits": {"image": 4}, "default": 8, "per_channel": True, "symmetric": True}
    assert PrecisionPolicy(**d) == policy


def test_unknown_branch_has_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"quantize\.policy\.imgae: unknown branch 'imgae'; did you mean "
                                          r"'image'\? available: image, text, audio, fusion, head, default"):
        PrecisionPolicy.from_dict({"imgae": 4}, key="quantize.policy")
    with pytest.raises(ConfigError, match="did you mean 'default'"):
        PrecisionPolicy.from_dict({"defualt": 4})
    with pytest.raises(ConfigError, match="unknown branch 'video'"):
        PrecisionPolicy(bits={"video": 4})


def test_bad_bits_and_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        PrecisionPolicy.from_dict({"image": 1, "text": "8", "head": True, "fusion": 9, "default": 12, "x": 4})
    problems = info.value.problems
    assert len(problems) == 6
    for key, value in (("image", "1"), ("text", "'8'"), ("head", "True"), ("fusion", "9"), ("default", "12")):
        assert any(p.startswith(f"policy.{key}: bit width must be one of [2, 3, 4, 5, 6, 7, 8]")
                   and p.endswith(f"got {value}") for p in problems), key
    with pytest.raises(ConfigError, match="expected a mapping branch"):
        PrecisionPolicy.from_dict([4, 8])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="policy.default"):
        PrecisionPolicy(default=1)


def test_branch_of_and_modules_for() -> None:
    assert branch_of("encoders.text.fwd.0") == "text"
    assert branch_of("encoders.image.stages.0.0.weight") == "image"
    assert branch_of("encoders.audio.parametrizations.weight.original") == "audio"
    assert branch_of("fusion.proj") == "fusion" and branch_of("head.fc.weight") == "head"
    for bad in ("", "encoders", "encoders.video.x", "spec"):
        with pytest.raises(ValueError, match="in no branch"):
            branch_of(bad)
    model = make_model(("image", "audio"))
    assert model_branches(model) == ["image", "audio", "fusion", "head"]
    assert modules_for(model, "image") is model.encoders["image"]
    assert modules_for(model, "fusion") is model.fusion and modules_for(model, "head") is model.head
    assert modules_for(model, "text") is None
    with pytest.raises(ConfigError, match="did you mean 'head'"):
        modules_for(model, "haed")
    # Every quantizable weight's module path maps back to the branch it was found in.
    for branch in model_branches(model):
        for path, _, _ in quantizable_weights(modules_for(model, branch)):
            prefix = f"encoders.{branch}" if branch in ("image", "audio") else branch
            assert branch_of(f"{prefix}.{path}".rstrip(".")) == branch


def _hand_size(model: MultimodalModel, bits_of: dict[str, int], per_channel: bool, symmetric: bool) -> int:
    """Size written out independently: quantized weights by name, everything else at 4/8 bytes."""
    total = 0
    for key, t in model.state_dict().items():
        module_path, _, leaf = key.rpartition(".")
        module = model.get_submodule(module_path)
        is_weight = isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding,
                                        torch.nn.LSTM)) and leaf.startswith("weight")
        bits = bits_of.get(branch_of(key), 32) if is_weight else 32
        if bits == 32 or not is_weight:
            total += t.numel() * t.element_size()
        else:
            groups = t.shape[0] if per_channel else 1
            total += math.ceil(t.numel() * bits / 8) + groups * (4 if symmetric else 5)
    return total


@pytest.mark.parametrize(("per_channel", "symmetric"), [(True, False), (False, False), (True, True)])
def test_size_model_matches_hand_count(per_channel: bool, symmetric: bool) -> None:
    model = make_model()
    fp32 = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert weight_bits_size(model, PrecisionPolicy()) == fp32
    for bits_of in ({"image": 4}, {"text": 2, "head": 8}, {b: 3 for b in model_branches(model)}):
        policy = PrecisionPolicy(bits=bits_of, per_channel=per_channel, symmetric=symmetric)
        assert weight_bits_size(model, policy) == _hand_size(model, bits_of, per_channel, symmetric)
    size8 = weight_bits_size(model, PrecisionPolicy.uniform(8, per_channel=per_channel, symmetric=symmetric))
    assert 0.25 < size8 / fp32 < 0.45  # > 1/4: biases, norms and per-channel scales stay fp32


def test_size_model_counts_fp16_and_parametrized_models_once() -> None:
    model = make_model(("image",))
    weights = sum(module_weight.numel() for _, m, n in quantizable_weights(model)
                  for module_weight in [getattr(m, n)])
    fp32 = weight_bits_size(model, PrecisionPolicy())
    assert weight_bits_size(model, PrecisionPolicy.uniform(16)) == fp32 - 2 * weights
    policy = PrecisionPolicy.uniform(4)
    plain = weight_bits_size(model, policy)
    prepare_qat_(model, policy)
    assert weight_bits_size(model, policy) == plain


def test_quantized_branches_skips_float_branches_and_absent_modalities() -> None:
    model = make_model(("image", "audio"))
    policy = PrecisionPolicy(bits={"image": 4, "text": 2, "fusion": 16}, default=32)
    assert [(b, bits) for b, bits, _ in quantized_branches(model, policy)] == [("image", 4)]
    got = list(quantized_branches(model, PrecisionPolicy.uniform(8)))
    assert [b for b, _, _ in got] == ["image", "audio", "fusion", "head"]
    assert all(sub is modules_for(model, b) and bits == 8 for b, bits, sub in got)
