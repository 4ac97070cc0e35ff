"""Late fusions without learned weighting: concatenation and presence-normalized sum."""

from __future__ import annotations

import torch
from torch import nn

from mmdistill.models.outputs import EncoderOutput
from mmdistill.models.registries import FUSIONS


def check_in_dims(in_dims: dict[str, int]) -> dict[str, int]:
    """Validate a fusion's ``in_dims`` (modality → pooled width); raises ValueError."""
    dims = {str(m): int(d) for m, d in dict(in_dims).items()}
    if not dims or any(d < 1 for d in dims.values()):
        raise ValueError(f"in_dims must map at least one modality to a positive width, got {in_dims!r}")
    return dims


def present_pooled(feats: dict[str, EncoderOutput], present: dict[str, torch.Tensor], m: str) -> torch.Tensor:
    """``feats[m].pooled`` with absent rows zeroed (as it is when ``zeroed_absent`` says so).

    Shapes:
        pooled ``[B, D]``, present ``[B]`` bool. Returns ``[B, D]``.
    """
    pooled = feats[m].pooled
    if feats[m].zeroed_absent:
        return pooled
    return pooled * present[m].unsqueeze(1).to(pooled.dtype)


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate the pooled vectors (absent rows as zeros), then linear + ReLU.

    Args:
        in_dims: modality → pooled width, in the order the vectors are concatenated.
        dim: output width.
        dropout: dropout on the concatenated vector.

    Shapes:
        feats[m].pooled ``[B, in_dims[m]]``, present[m] ``[B]`` bool. Returns ``[B, dim]``.
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dims = check_in_dims(in_dims)
        self.modalities = list(self.in_dims)
        self.out_dim = int(dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(sum(self.in_dims.values()), self.out_dim)

    def forward(self, feats: dict[str, EncoderOutput], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fuse by concatenation."""
        z = torch.cat([present_pooled(feats, present, m) for m in self.modalities], dim=1)
        return torch.relu(self.proj(self.dropout(z)))


@FUSIONS.register("sum")
class SumFusion(nn.Module):
    """Project each modality to ``dim``, average over the modalities present in each row, ReLU.

    Rows with no modality present give zeros.

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

    def forward(self, feats: dict[str, EncoderOutput], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fuse by presence-normalized sum."""
        total: torch.Tensor | None = None
        count: torch.Tensor | None = None
        for m in self.modalities:
            p = present[m].unsqueeze(1).to(feats[m].pooled.dtype)
            term = self.projs[m](self.dropout(feats[m].pooled)) * p
            total = term if total is None else total + term
            count = p if count is None else count + p
        assert total is not None and count is not None  # in_dims is non-empty
        return torch.relu(total / count.clamp_min(1.0))
