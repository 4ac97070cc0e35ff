"""The built-in distillation losses; importing this package registers all of them in ``LOSSES``.

Families (``loss_family(name)``): ``logits`` (:mod:`.logits`), ``feature`` (:mod:`.features`),
``relation`` (:mod:`.relations`) and ``contrastive`` (:mod:`.crossmodal`). Build one from a config
entry with :func:`build_loss`; ``docs/losses.md`` lists every loss with its formula and paper.
"""

from __future__ import annotations

from mmdistill.distill.losses.crossmodal import ContrastiveLoss
from mmdistill.distill.losses.features import AttentionTransferLoss, CosineLoss, HintLoss, attention_map
from mmdistill.distill.losses.logits import (
    DKDLoss,
    KDCELoss,
    KDLoss,
    MSELogitsLoss,
    ReverseKLLoss,
    SymmetricKLLoss,
    soften,
)
from mmdistill.distill.losses.relations import (
    PKTLoss,
    RKDAngleLoss,
    RKDDistanceLoss,
    SimilarityPreservingLoss,
)
from mmdistill.distill.registries import LOSS_FAMILIES, LOSSES, build_loss, loss_family, loss_kwargs

__all__ = [
    "LOSSES",
    "LOSS_FAMILIES",
    "AttentionTransferLoss",
    "ContrastiveLoss",
    "CosineLoss",
    "DKDLoss",
    "HintLoss",
    "KDCELoss",
    "KDLoss",
    "MSELogitsLoss",
    "PKTLoss",
    "RKDAngleLoss",
    "RKDDistanceLoss",
    "ReverseKLLoss",
    "SimilarityPreservingLoss",
    "SymmetricKLLoss",
    "attention_map",
    "build_loss",
    "loss_family",
    "loss_kwargs",
    "soften",
]
