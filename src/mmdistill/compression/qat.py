"""Quantization-aware training: fake-quantized weights with a straight-through estimator (STE).

Mechanism: a ``torch.nn.utils.parametrize`` parametrization (:class:`FakeQuantWeight`) on each
quantizable weight. It was chosen over a forward pre-hook because it also covers ``nn.LSTM`` /
``nn.GRU``: their ``weight_ih_l0`` etc. are read through ``getattr`` when the RNN refreshes its
flat-weight list at every forward (``RNNBase._update_flat_weights`` notices that the parametrized
tensor is a new object), so the quantized values reach the fused RNN kernel, whereas a pre-hook
that overwrote ``module.weight`` would fight the RNN's cached ``_flat_weights``. The latent fp32
weight lives at ``<module>.parametrizations.<name>.original`` and is what the optimizer updates.

Forward: ``w_hat = quantize_weight(w)`` (min-max, per channel, recomputed from the current latent
weight every step). Backward: ``d w_hat / d w = 1`` (STE), or with ``clip_ste=True`` 0 for entries
outside the representable range.

Pipeline use (the training itself is the existing distillation recipe, never hidden here)::

    prepare_qat_(student, policy)                  # student: the fp32 (or pruned) MultimodalModel
    trained = distill_student(name, variant, data, cfg, run_dir, teachers=..., logger=..., seed=...,
                              init=student)       # the ordinary distill loop, with fake-quant weights
    convert_qat_(trained.model)                    # bake w_hat into plain weights, drop parametrizations
    save_model(trained.model, trained.directory, extra=...)

:func:`qat_finetune` is exactly that sequence.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from mmdistill.compression.fake_quant import clip_mask, quantize_weight
from mmdistill.compression.policy import (
    FLOAT_BITS,
    PrecisionPolicy,
    check_bits,
    quantizable_weights,
    quantized_branches,
)
from mmdistill.errors import MMDistillError

if TYPE_CHECKING:  # the recipe layer is imported lazily: compression must not depend on it at import
    from mmdistill.config.schema import Config, DistillStudentConfig
    from mmdistill.models.multimodal import MultimodalModel
    from mmdistill.recipes.data import DataBundle
    from mmdistill.recipes.train import TrainedModel
    from mmdistill.training.logging import MetricsLogger


class FakeQuantWeight(nn.Module):
    """Parametrization ``w → w_hat`` (fake b-bit quantization) with a straight-through gradient.

    Args:
        bits: 2..8.
        per_channel: one range per output channel (axis 0).
        symmetric: symmetric signed grid.
        clip_ste: zero the gradient of entries outside the representable range (the asymmetric
            grid can clip the extremes by up to half a step); False passes every gradient through.

    Shapes:
        w: any weight shape; returns the same shape and dtype.
    """

    def __init__(self, bits: int, *, per_channel: bool = True, symmetric: bool = False,
                 clip_ste: bool = False) -> None:
        super().__init__()
        bits = check_bits(bits)
        if bits in FLOAT_BITS:
            raise ValueError(f"FakeQuantWeight needs 2..8 bits, got {bits}; leave fp weights unparametrized")
        self.bits = bits
        self.per_channel = bool(per_channel)
        self.symmetric = bool(symmetric)
        self.clip_ste = bool(clip_ste)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Quantized value forward, identity (or clip-masked) gradient backward."""
        opts = {"per_channel": self.per_channel, "symmetric": self.symmetric}
        w_hat = quantize_weight(w.detach(), self.bits, **opts)
        passthrough = w - w.detach()  # value 0, gradient 1
        if self.clip_ste:
            passthrough = passthrough * clip_mask(w, self.bits, **opts).to(w.dtype)
        return w_hat + passthrough

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, per_channel={self.per_channel}, symmetric={self.symmetric}, "
                f"clip_ste={self.clip_ste}")


def prepare_qat_(model: nn.Module, policy: PrecisionPolicy, *, clip_ste: bool = False) -> int:
    """Parametrize, in place, each quantizable weight of the branches below 16 bits (FakeQuantWeight).

    Args:
        model: a MultimodalModel (not already prepared).
        policy: branch → bits; branches at 16/32 bits stay plain fp32.
        clip_ste: see :class:`FakeQuantWeight`.

    Returns:
        The number of weights parametrized.

    Raises:
        MMDistillError: the model already holds fake-quant parametrizations.
    """
    if is_qat_prepared(model):
        raise MMDistillError("prepare_qat_: the model is already prepared for QAT; call convert_qat_ first "
                             "or start from the fp32 model")
    count = 0
    for _, bits, sub in quantized_branches(model, policy):
        for _, module, name in list(quantizable_weights(sub)):
            fq = FakeQuantWeight(bits, per_channel=policy.per_channel, symmetric=policy.symmetric,
                                 clip_ste=clip_ste)
            parametrize.register_parametrization(module, name, fq)
            count += 1
    return count


def is_qat_prepared(model: nn.Module) -> bool:
    """True if any submodule holds a :class:`FakeQuantWeight` parametrization."""
    return any(isinstance(m, FakeQuantWeight) for m in model.modules())


@torch.no_grad()
def convert_qat_(model: nn.Module) -> int:
    """Bake the fake-quantized weights into plain parameters and remove the parametrizations.

    Afterwards ``model.state_dict()`` has the original key names (``...weight``, ``...weight_ih_l0``)
    holding ``w_hat``, so :func:`~mmdistill.models.checkpoint.save_model` /
    :func:`~mmdistill.models.checkpoint.load_model` reproduce the QAT model's outputs exactly.
    Other parametrizations (not :class:`FakeQuantWeight`) are left alone.

    Returns:
        The number of weights converted.
    """
    count = 0
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations.keys()):
            plist = module.parametrizations[name]
            if any(isinstance(p, FakeQuantWeight) for p in plist):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
                count += 1
        if isinstance(module, nn.RNNBase):
            module._init_flat_weights()  # point the RNN's flat list at the new plain parameters
    return count


def qat_finetune(
    name: str,
    variant: DistillStudentConfig,
    data: DataBundle,
    cfg: Config,
    run_dir: Path,
    *,
    student: MultimodalModel,
    policy: PrecisionPolicy,
    teachers: dict[str, MultimodalModel],
    logger: MetricsLogger,
    seed: int,
    clip_ste: bool = False,
    key: str | None = None,
    extra: dict[str, Any] | None = None,
) -> TrainedModel:
    """QAT through the distillation recipe: prepare → ``distill_student(init=...)`` → convert → save.

    ``student`` (modified in place) is trained with ``variant``'s strategy and schedule, exactly as a
    distilled student, then saved to ``run_dir/students/<name>`` with ``"qat": policy.to_dict()``
    in its ``model.json`` extra; the saved weights are the quantized values.
    """
    from mmdistill.recipes.distill import distill_student

    prepare_qat_(student, policy, clip_ste=clip_ste)
    meta = {"qat": policy.to_dict()} | (extra or {})
    # convert_qat_ runs before distill_student saves: the checkpoint holds the baked weights.
    trained = distill_student(name, variant, data, cfg, run_dir, teachers=teachers, logger=logger, seed=seed,
                              init=student, key=key, extra=meta, before_save=convert_qat_)
    return trained
