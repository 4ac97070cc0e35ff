"""The one model class: per-modality encoders → fusion → head.

Teacher and student are the same class at different sizes or with fewer modalities (torchtune's
composition-over-subclasses idea); distillation code only ever sees :class:`ModelOutput`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmdistill.data.batch import Batch
from mmdistill.errors import DataError
from mmdistill.models.encoders.common import is_exporting
from mmdistill.models.outputs import EncoderOutput, ModelOutput


def _rows(ref: torch.Tensor, width: int, fill: float, dtype: torch.dtype) -> torch.Tensor:
    """A ``[B, width]`` tensor of ``fill`` with B taken from ``ref``'s first axis.

    Built from ``ref`` rather than from ``int(ref.shape[0])`` so that tracing and ``torch.export``
    keep the batch axis dynamic instead of baking in the example's batch size.
    """
    column = ref.reshape(ref.shape[0], -1)[:, :1]
    return torch.full_like(column, fill, dtype=dtype).expand(-1, width).contiguous()


def _scatter_rows(sub: torch.Tensor, index: torch.Tensor, batch: int) -> torch.Tensor:
    """Place ``sub`` (rows ``index`` of a batch) into a zero tensor of ``batch`` rows."""
    out = sub.new_zeros((batch, *sub.shape[1:]))
    return out.index_copy(0, index, sub)


class MultimodalModel(nn.Module):
    """Encoders per modality, a fusion and a head.

    Args:
        encoders: modality → encoder (``forward(x, lengths) -> EncoderOutput``, ``out_dim``).
        fusion: ``forward(feats, present) -> [B, D_f]`` with ``out_dim``.
        head: ``forward([B, D_f]) -> [B, K]`` or, for multi-task heads, task → logits (the first
            task is the primary one).
        spec: the architecture spec that rebuilt this model (see
            :func:`mmdistill.models.builders.build_model`); needed to save a checkpoint.

    Absent modalities: a modality missing from the batch, or whose ``present`` mask is all False,
    is not encoded (its pooled features are zeros). Rows with ``present[m] == False`` get zero
    pooled features and are masked by the fusion, so they give the same output as a batch without
    that modality. A batch without a ``present`` entry for a modality it holds counts every row as
    present. In training mode an encoder only sees its present rows, so BatchNorm statistics are
    not skewed by the zero placeholders of absent rows. Modalities the model lacks are ignored.
    """

    def __init__(
        self, encoders: nn.ModuleDict, fusion: nn.Module, head: nn.Module, spec: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if len(encoders) == 0:
            raise ValueError("a MultimodalModel needs at least one encoder")
        self.encoders = encoders
        self.fusion = fusion
        self.head = head
        self.spec = spec

    @property
    def modalities(self) -> list[str]:
        """The model's modalities, in encoder order."""
        return list(self.encoders.keys())

    @property
    def num_classes(self) -> int:
        """Number of classes of the primary task."""
        return int(self.head.num_classes)

    def feature_dims(self) -> dict[str, int]:
        """Width of each entry of :attr:`ModelOutput.features` (``"<m>.pooled"`` and ``"fused"``)."""
        dims = {f"{m}.pooled": int(enc.out_dim) for m, enc in self.encoders.items()}
        dims["fused"] = int(self.fusion.out_dim)
        return dims

    def _reference(self, batch: Batch) -> torch.Tensor:
        """A tensor whose first axis is the batch: a modality of the model, else the labels."""
        for m in self.modalities:
            if isinstance(batch.get(m), torch.Tensor):
                return batch[m]
        label = batch.get("label")
        if isinstance(label, torch.Tensor):
            return label
        raise DataError(
            f"batch holds none of the model's modalities {self.modalities} and no 'label' to size it; "
            f"keys received: {sorted(batch)}"
        )

    def encode(self, batch: Batch) -> tuple[dict[str, EncoderOutput], dict[str, torch.Tensor]]:
        """Run the encoders; absent modalities and rows give zero pooled features.

        Returns:
            feats: modality → EncoderOutput for every model modality (pooled zeroed where absent).
            present: modality → ``[B]`` bool for every model modality.
        """
        ref = self._reference(batch)
        dtype = next(self.parameters()).dtype
        exporting = is_exporting()
        presents: dict[str, torch.Tensor] = batch.get("present", {})
        lengths_all: dict[str, torch.Tensor] = batch.get("lengths", {})
        feats: dict[str, EncoderOutput] = {}
        present: dict[str, torch.Tensor] = {}
        for m, encoder in self.encoders.items():
            x = batch.get(m)
            mask = presents.get(m)
            if x is not None and mask is None:
                mask = _rows(x, 1, 1, torch.bool).squeeze(1)
            if x is None or (not exporting and not bool(mask.any())):
                present[m] = _rows(ref, 1, 0, torch.bool).squeeze(1)
                zeros = _rows(ref, int(encoder.out_dim), 0.0, dtype)
                feats[m] = EncoderOutput(pooled=zeros, zeroed_absent=True)
                continue
            if mask.dtype != torch.bool:  # a bool mask would still export a Cast node
                mask = mask.to(dtype=torch.bool)
            lengths = lengths_all.get(m)
            if self.training and not exporting and not bool(mask.all()):
                batch_size = int(mask.shape[0])
                index = mask.nonzero().squeeze(1)
                sub_lengths = None if lengths is None else lengths.index_select(0, index)
                sub = encoder(x.index_select(0, index), sub_lengths)
                out = EncoderOutput(
                    pooled=_scatter_rows(sub.pooled, index, batch_size),
                    tokens=None if sub.tokens is None else _scatter_rows(sub.tokens, index, batch_size),
                    mask=None if sub.mask is None else _scatter_rows(sub.mask, index, batch_size),
                )
            else:
                out = encoder(x, lengths)
                out.pooled = out.pooled * mask.unsqueeze(1).to(out.pooled.dtype)
            out.zeroed_absent = True
            feats[m] = out
            present[m] = mask
        return feats, present

    def forward(self, batch: Batch) -> ModelOutput:
        """Classify a batch (see :mod:`mmdistill.data.batch` for its layout).

        Shapes:
            batch[m]: per the batch contract. Returns logits ``[B, K]``; features
            ``"<m>.pooled"`` ``[B, D_m]`` and ``"fused"`` ``[B, D_f]``; task_logits task → ``[B, K_t]``.
        """
        feats, present = self.encode(batch)
        fused = self.fusion(feats, present)
        features = {f"{m}.pooled": feats[m].pooled for m in self.modalities}
        features["fused"] = fused
        out = self.head(fused)
        if isinstance(out, dict):
            primary = getattr(self.head, "primary_task", next(iter(out)))
            return ModelOutput(logits=out[primary], features=features, task_logits=dict(out))
        return ModelOutput(logits=out, features=features)
