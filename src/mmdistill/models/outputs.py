"""Output contracts shared by every encoder and model (timm's forward_features/forward_head idea:
one interface, so feature distillation needs no hook paths)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EncoderOutput:
    """What every encoder returns.

    Shapes:
        pooled: ``[B, D]`` one vector per row (D = encoder ``out_dim``).
        tokens: ``[B, T, D]`` per-position features, or None for encoders without a sequence.
        mask: ``[B, T]`` bool, True at valid (non-padded) positions, or None.
        zeroed_absent: True when ``pooled`` is already zero at every row whose ``present`` entry is
            False (:meth:`MultimodalModel.encode <mmdistill.models.multimodal.MultimodalModel.encode>`
            sets it); fusions then skip masking it again, which saves an exported graph one
            multiplication per modality.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    zeroed_absent: bool = False


@dataclass
class ModelOutput:
    """What :class:`mmdistill.models.multimodal.MultimodalModel` returns.

    Shapes:
        logits: ``[B, K]`` for the primary task (K = number of classes).
        features: name → tensor; always holds ``"<modality>.pooled"`` ``[B, D_m]`` for each of the
            model's modalities (zeros for absent rows) and ``"fused"`` ``[B, D_f]``.
        task_logits: task name → ``[B, K_t]`` for multi-task heads (includes the primary task
            under its name); empty for single-task models.
    """

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    task_logits: dict[str, torch.Tensor] = field(default_factory=dict)
