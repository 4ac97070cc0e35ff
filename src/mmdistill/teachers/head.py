"""Encoders of a pretrained teacher's trainable part: stored embeddings in, fine-tuned layers.

The fusion and head of a "frozen encoders + trained head" teacher are an ordinary
:class:`~mmdistill.models.multimodal.MultimodalModel`, trained by the usual supervised recipe on
samples whose pretrained modalities hold embeddings (see :mod:`mmdistill.teachers.frozen`). Two
encoder families make that possible, registered in the model :data:`~mmdistill.models.registries.ENCODERS`
registry once per modality (a spec names them like any encoder, so ``model.json`` rebuilds them):

* ``embedding_<m>`` (:class:`EmbeddingEncoder`): reads a precomputed embedding ``[B, D]``
  (from the embedding store), optionally LayerNorm + projection;
* ``pretrained_<m>`` (:class:`FinetuneEncoder`): the pretrained encoder itself, run online on its
  own preprocessed inputs with the last ``finetune_layers`` blocks trainable. It bypasses the
  embedding store: every training step runs the encoder.

They are registered only by :func:`register_head_encoders` (called by
:func:`~mmdistill.teachers.frozen.head_spec` and :func:`~mmdistill.teachers.frozen.load_frozen_teacher`),
not on import: they read stored embeddings or need a pretrained model, so the registry-wide
encoder tests and ``mmdistill list`` (which build every encoder from a preset) must not see them
by accident.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmdistill import MODALITIES
from mmdistill.errors import ConfigError
from mmdistill.models.outputs import EncoderOutput
from mmdistill.models.registries import ENCODERS


class EmbeddingEncoder(nn.Module):
    """A precomputed embedding as an encoder: ``LayerNorm → dropout → Linear`` (each optional).

    Pretrained embeddings come at arbitrary scales (unit-norm sentence vectors, speech embeddings
    in the tens), so the LayerNorm puts them on one footing before the fusion.

    Args:
        in_dim: width of the stored embedding.
        dim: output width, or None to keep ``in_dim`` without a projection.
        norm: apply a LayerNorm first.
        dropout: dropout on the (normalized) embedding.

    Shapes:
        x ``[B, in_dim]`` (lengths ignored). Returns pooled ``[B, out_dim]``.
    """

    def __init__(self, in_dim: int, dim: int | None = None, norm: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if in_dim < 1 or (dim is not None and dim < 1):
            raise ValueError(f"in_dim and dim must be >= 1, got in_dim={in_dim}, dim={dim}")
        self.in_dim = int(in_dim)
        self.out_dim = int(dim) if dim is not None else self.in_dim
        self.norm = nn.LayerNorm(self.in_dim) if norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(self.in_dim, self.out_dim) if dim is not None else nn.Identity()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode stored embeddings."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"EmbeddingEncoder expects stored embeddings [B, {self.in_dim}], got "
                             f"{list(x.shape)}; build the samples with "
                             f"mmdistill.teachers.frozen.teacher_samples")
        return EncoderOutput(pooled=self.proj(self.dropout(self.norm(x.float()))))


def _blocks(module: nn.Module) -> tuple[str, list[nn.Module]]:
    """The sequence of layers "the last N layers" counts in: the ModuleList holding the most
    parameters (a transformer's ``encoder.layer``), else the top-level children with parameters."""
    best: tuple[int, str, list[nn.Module]] = (0, "", [])
    for name, m in module.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0:
            size = sum(p.numel() for p in m.parameters())
            if size > best[0]:
                best = (size, name, list(m))
    if best[2]:
        return best[1], best[2]
    return "(children)", [c for c in module.children() if any(True for _ in c.parameters())]


def unfreeze_last_layers_(module: nn.Module, n: int, *, source: str = "encoder") -> list[nn.Module]:
    """Freeze ``module``, then make the last ``n`` layers (see :func:`_blocks`) trainable, in place.

    Returns:
        the frozen blocks (kept in eval mode by :class:`FinetuneEncoder` while training).

    Raises:
        ConfigError: ``n`` is negative or more than the module has layers.
    """
    name, blocks = _blocks(module)
    if n < 0 or n > len(blocks):
        raise ConfigError(f"{source}: finetune_layers must be in [0, {len(blocks)}] (it has {len(blocks)} "
                          f"layers in {name}), got {n}")
    for p in module.parameters():
        p.requires_grad_(False)
    trainable = blocks[len(blocks) - n:] if n else []
    for block in trainable:
        for p in block.parameters():
            p.requires_grad_(True)
    keep = {id(b) for b in trainable}
    return [b for b in blocks if id(b) not in keep]


def frozen_subtrees(module: nn.Module) -> list[nn.Module]:
    """The largest submodules of ``module`` that hold parameters, none of them trainable."""
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        return [module]
    return [part for child in module.children() for part in frozen_subtrees(child)]


class FinetuneEncoder(nn.Module):
    """A pretrained encoder run online inside the teacher, its last ``finetune_layers`` trainable.

    Args:
        modality: the modality it reads.
        encoder: ``{"name": PRETRAINED_ENCODERS name, "path": str | None, "kwargs": {...}}``.
        finetune_layers: how many of the last layers train (0 = all frozen, but still online).
        preprocessing: the teacher's preprocessing settings (``PreprocessSpec`` fields), for
            encoders that use mmdistill transforms (``torch``).

    Shapes:
        x: the encoder's own preprocessed input, collated (token ids ``[B, T]``, ...). Returns
        the pretrained encoder's :class:`EncoderOutput` (pooled ``[B, out_dim]``).
    """

    def __init__(self, modality: str, encoder: dict[str, Any], finetune_layers: int = 0,
                 preprocessing: dict[str, Any] | None = None) -> None:
        super().__init__()
        from mmdistill.teachers.spec import build_encoder

        pre = build_encoder(modality, encoder, preprocessing=preprocessing,
                            key=f"teacher.pretrained.{modality}")
        if not pre.finetunable:
            raise ConfigError(f"teacher.pretrained.{modality}.finetune_layers: encoder "
                              f"'{encoder.get('name')}' "
                              "cannot be fine-tuned (ONNX); set finetune_layers: 0")
        self.modality = modality
        self.inner = pre.module()
        self.out_dim = int(pre.out_dim)
        unfreeze_last_layers_(self.inner, int(finetune_layers), source=f"teacher.pretrained.{modality}")
        self._frozen = frozen_subtrees(self.inner)

    def train(self, mode: bool = True) -> FinetuneEncoder:
        """Train mode for the trainable layers; every frozen part (the frozen blocks and what feeds
        them, e.g. a BERT's embeddings) stays in eval (no dropout), so it computes exactly what the
        frozen encoder computes."""
        super().train(mode)
        for part in self._frozen:
            part.eval()
        return self

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Run the pretrained encoder on its own inputs."""
        return self.inner(x, lengths)


def _register(modality: str) -> None:
    def embedding(in_dim: int, dim: int | None = None, norm: bool = True,
                  dropout: float = 0.0) -> EmbeddingEncoder:
        return EmbeddingEncoder(in_dim, dim=dim, norm=norm, dropout=dropout)

    def pretrained(encoder: dict[str, Any], finetune_layers: int = 0,
                   preprocessing: dict[str, Any] | None = None) -> FinetuneEncoder:
        return FinetuneEncoder(modality, encoder, finetune_layers=finetune_layers,
                               preprocessing=preprocessing)

    embedding.__doc__ = f"A stored pretrained {modality} embedding [B, D] (LayerNorm, optional projection)."
    pretrained.__doc__ = f"A pretrained {modality} encoder run online, its last layers fine-tuned."
    ENCODERS.register(f"embedding_{modality}", modality=modality, input="embedding")(embedding)
    ENCODERS.register(f"pretrained_{modality}", modality=modality, input="pretrained")(pretrained)


def register_head_encoders() -> None:
    """Register ``embedding_<m>`` and ``pretrained_<m>`` in the model ``ENCODERS`` (idempotent).

    Needed before :func:`~mmdistill.models.builders.build_model` or
    :func:`~mmdistill.models.checkpoint.load_model` meets a head model's spec.
    """
    for m in MODALITIES:
        if f"embedding_{m}" not in ENCODERS:
            _register(m)
