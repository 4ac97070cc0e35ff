"""Attention fusion: a learned query attends over one token per modality."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmdistill.models.fusion.concat import check_in_dims
from mmdistill.models.outputs import EncoderOutput
from mmdistill.models.registries import FUSIONS


@FUSIONS.register("attention")
class AttentionFusion(nn.Module):
    """Multi-head attention pooling over modality tokens with a key padding mask for absent ones.

    Each pooled vector is projected to ``dim`` plus a learned modality embedding, layer-normed,
    and a single learned query attends over these tokens. Absent modalities get a score of
    ``finfo.min`` (exactly zero weight) and their weights are then multiplied by the presence
    mask, so a row with nothing present attends to nothing and returns zeros instead of NaN.

    Args:
        in_dims: modality → pooled width.
        dim: token and output width.
        heads: attention heads (must divide ``dim``).
        dropout: dropout on the attention weights.

    Shapes:
        feats[m].pooled ``[B, in_dims[m]]``, present[m] ``[B]`` bool. Returns ``[B, dim]``.
    """

    def __init__(self, in_dims: dict[str, int], dim: int = 128, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads != 0:
            raise ValueError(f"dim must be a positive multiple of heads, got dim={dim}, heads={heads}")
        self.in_dims = check_in_dims(in_dims)
        self.modalities = list(self.in_dims)
        self.out_dim = int(dim)
        self.heads = int(heads)
        self.projs = nn.ModuleDict({m: nn.Linear(d, self.out_dim) for m, d in self.in_dims.items()})
        self.modality_embed = nn.Parameter(torch.randn(len(self.modalities), self.out_dim) * 0.02)
        self.norm = nn.LayerNorm(self.out_dim)
        self.query = nn.Parameter(torch.randn(self.out_dim) * 0.02)
        self.key = nn.Linear(self.out_dim, self.out_dim)
        self.value = nn.Linear(self.out_dim, self.out_dim)
        self.out = nn.Linear(self.out_dim, self.out_dim)
        self.dropout = nn.Dropout(dropout)

    def attention_weights(
        self, feats: dict[str, EncoderOutput], present: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values ``[B, M, heads, dim/heads]`` and attention weights ``[B, heads, M]``."""
        tokens = torch.stack([self.projs[m](feats[m].pooled) for m in self.modalities], dim=1)
        tokens = self.norm(tokens + self.modality_embed)
        batch, count, _ = tokens.shape
        head_dim = self.out_dim // self.heads
        keys = self.key(tokens).view(batch, count, self.heads, head_dim)
        values = self.value(tokens).view(batch, count, self.heads, head_dim)
        query = self.query.view(self.heads, head_dim)
        scores = torch.einsum("hd,bmhd->bhm", query, keys) / math.sqrt(head_dim)
        mask = torch.stack([present[m] for m in self.modalities], dim=1).unsqueeze(1)  # [B, 1, M]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)
        return values, self.dropout(weights)

    def forward(self, feats: dict[str, EncoderOutput], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fuse by attention pooling."""
        values, weights = self.attention_weights(feats, present)
        context = torch.einsum("bhm,bmhd->bhd", weights, values).reshape(values.shape[0], self.out_dim)
        any_present = torch.stack([present[m] for m in self.modalities], dim=1).any(dim=1, keepdim=True)
        return torch.relu(self.out(context)) * any_present.to(context.dtype)
