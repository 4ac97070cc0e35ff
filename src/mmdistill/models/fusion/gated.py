"""Gated fusion: a learned, input-dependent scalar weight per modality."""

from __future__ import annotations

import torch
from torch import nn

from mmdistill.models.fusion.concat import check_in_dims
from mmdistill.models.outputs import EncoderOutput
from mmdistill.models.registries import FUSIONS


@FUSIONS.register("gated")
class GatedFusion(nn.Module):
    """Project each modality to ``dim``; weight it by a sigmoid gate computed from its own features.

    ``w_m = sigmoid(g_m(h_m)) * present_m``, normalized over modalities to sum to 1 per row
    (rows with nothing present give zeros); output ``ReLU(sum_m w_m h_m)``.

    Args:
        in_dims: modality → pooled width.
        dim: output width.
        dropout: dropout on each pooled vector.

    Shapes:
        feats[m].pooled ``[B, in_dims[m]]``, present[m] ``[B]`` bool. Returns ``[B, dim]``.
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dims = check_in_dims(in_dims)
        self.modalities = list(self.in_dims)
        self.out_dim = int(dim)
        self.dropout = nn.Dropout(dropout)
        self.projs = nn.ModuleDict({m: nn.Linear(d, self.out_dim) for m, d in self.in_dims.items()})
        self.gates = nn.ModuleDict({m: nn.Linear(self.out_dim, 1) for m in self.in_dims})

    def gate_weights(
        self, feats: dict[str, EncoderOutput], present: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected features ``[B, M, dim]`` and normalized gate weights ``[B, M]`` (modality order)."""
        hs, gs = [], []
        for m in self.modalities:
            h = self.projs[m](self.dropout(feats[m].pooled))
            hs.append(h)
            gs.append(torch.sigmoid(self.gates[m](h)).squeeze(1) * present[m].to(h.dtype))
        weights = torch.stack(gs, dim=1)
        # Gates are > 0 for present modalities, so the sum is 0 only when nothing is present.
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)
        return torch.stack(hs, dim=1), weights

    def forward(self, feats: dict[str, EncoderOutput], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fuse by gated average."""
        h, w = self.gate_weights(feats, present)
        return torch.relu((h * w.unsqueeze(-1)).sum(dim=1))
