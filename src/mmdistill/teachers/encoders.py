"""PyTorch pretrained encoders: one modality of a saved mmdistill model, or a user module.

Both run an mmdistill-style encoder (``forward(x, lengths) -> EncoderOutput``) on inputs made by
mmdistill transforms with the teacher's own settings, so both can be fine-tuned
(:class:`~mmdistill.teachers.head.FinetuneEncoder`). Weights come from safetensors only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdistill.data.collate import collate
from mmdistill.distill.fingerprint import model_fingerprint
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.models.outputs import EncoderOutput
from mmdistill.teachers.base import RawBatch, frozen_
from mmdistill.teachers.fingerprint import combine, settings_fingerprint
from mmdistill.teachers.preprocess import PreprocessSpec, checkpoint_preprocessing
from mmdistill.teachers.registry import PRETRAINED_ENCODERS, TORCH_MODULES

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")


def load_weights_(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors state dict into ``module`` strictly (in place); never unpickles.

    Raises:
        CheckpointError: the file is missing, a pickle format, unreadable, or its keys/shapes differ.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if p.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(f"{p}: pickle checkpoints are never loaded (they can run code); convert it "
                              f"once "
                              "with safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')")
    if not p.is_file():
        raise CheckpointError(f"{p}: weights file not found; point 'path' at a .safetensors file")
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{p}: unreadable safetensors file ({exc})") from exc
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {list(v.shape)} vs module {list(expected[k].shape)}" for k, v in state.items()
              if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(f"{p}: weights do not fit {type(module).__name__}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, shapes {shapes[:3]}; save the state_dict of the "
                              "same class with the same kwargs")
    module.load_state_dict(state, strict=True)
    return module


def build_module(cls: type[nn.Module], kwargs: dict[str, Any] | None, *, key: str, name: str) -> nn.Module:
    """``cls(**kwargs)`` under a fixed seed (the global RNG is left as it was).

    A module built without a weights file keeps its initial weights, and the run rebuilds it in
    every later stage; the fixed seed makes those rebuilds the same module, so its fingerprint
    (what keys the embedding store and the teacher cache) does not change between stages.

    Raises:
        ConfigError: the constructor rejects ``kwargs``, naming ``key``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            return cls(**(kwargs or {}))
        except TypeError as exc:
            raise ConfigError(f"{key}: cannot build teacher module '{name}' ({exc})") from exc


def collate_inputs(xs: Sequence[torch.Tensor], modality: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack/pad one modality's per-record tensors as :func:`~mmdistill.data.collate.collate` does.

    Shapes:
        returns ``x [B, ...]`` and ``lengths [B]`` (None for images).
    """
    batch = collate([{"id": str(i), "label": 0, modality: x} for i, x in enumerate(xs)])
    return batch[modality], batch["lengths"].get(modality)


class OutputAdapter(nn.Module):
    """Wrap a module whose forward returns ``EncoderOutput`` or a ``[B, D]`` tensor as an encoder."""

    def __init__(self, inner: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.inner = inner
        self.out_dim = int(out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Run the wrapped module; a plain tensor becomes the pooled output."""
        out = self.inner(x, lengths)
        if isinstance(out, EncoderOutput):
            return out
        if isinstance(out, torch.Tensor) and out.ndim == 2:
            return EncoderOutput(pooled=out)
        raise ConfigError(f"encoder {type(self.inner).__name__} returned {type(out).__name__} "
                          f"{list(getattr(out, 'shape', []))}; return EncoderOutput or a [B, D] tensor")


class ModuleEncoder:
    """A :class:`~mmdistill.teachers.base.PretrainedEncoder` over a PyTorch encoder module.

    Args:
        modality: the modality it reads.
        encoder: the module (``forward(x, lengths)`` → ``EncoderOutput`` or ``[B, D]``), frozen here.
        preprocessing: the teacher's settings for ``modality`` (mmdistill transforms).
        out_dim: embedding width (default ``encoder.out_dim``).
        identity: JSON description of where it came from (part of the fingerprint).
        batch_size: records per forward in :meth:`embed`.
    """

    finetunable = True

    def __init__(self, modality: str, encoder: nn.Module, preprocessing: PreprocessSpec, *,
                 out_dim: int | None = None, identity: dict[str, Any], batch_size: int = 256) -> None:
        dim = out_dim if out_dim is not None else getattr(encoder, "out_dim", None)
        if dim is None:
            raise ConfigError(f"{identity}: the module has no out_dim attribute; pass out_dim in kwargs")
        self.modality = modality
        self.out_dim = int(dim)
        self._module = frozen_(OutputAdapter(encoder, self.out_dim))
        self._pre = preprocessing.preprocessor([modality])
        self._settings = {"identity": identity, "preprocessing": preprocessing.describe()[modality]}
        self.batch_size = int(batch_size)

    def fingerprint(self) -> str:
        """Weights (state dict bytes) plus preprocessing settings."""
        settings = settings_fingerprint("module-encoder", self._settings)
        return combine(model_fingerprint(self._module), settings)

    def preprocess(self, records: RawBatch) -> list[torch.Tensor]:
        """mmdistill transforms with the teacher's settings, one tensor per record."""
        return [s[self.modality] for s in self._pre.process_all(list(records), progress=False)]

    def embed(self, records: RawBatch) -> torch.Tensor:
        """Frozen embeddings ``[B, D]``."""
        outs = []
        with torch.inference_mode():
            for start in range(0, len(records), self.batch_size):
                chunk = records[start:start + self.batch_size]
                x, lengths = collate_inputs(self.preprocess(chunk), self.modality)
                outs.append(self._module(x, lengths).pooled.float())
        return torch.cat(outs) if outs else torch.zeros(0, self.out_dim)

    def module(self) -> nn.Module:
        """The encoder module (frozen; :class:`~mmdistill.teachers.head.FinetuneEncoder` unfreezes)."""
        return self._module


@PRETRAINED_ENCODERS.register("mmdistill", modality=None, finetunable=True, needs=None)
def checkpoint_encoder(*, modality: str, path: str | None,
                       preprocessing: PreprocessSpec | None = None) -> ModuleEncoder:
    """One modality's encoder of a saved mmdistill model, with the preprocessing it was trained with.

    ``path`` is the checkpoint folder (``model.json`` + ``model.safetensors``); its preprocessing
    and tokenizer come from the checkpoint's metadata, not from the teacher's settings.
    """
    from mmdistill.models.checkpoint import load_model

    if not path:
        raise ConfigError(f"teacher.pretrained.{modality}.path: encoder 'mmdistill' needs a checkpoint "
                          f"folder")
    model, extra = load_model(Path(path))
    if modality not in model.encoders:
        raise CheckpointError(f"{path}: the model has no {modality} encoder (it reads {model.modalities})")
    pre = checkpoint_preprocessing(path, extra, [modality])
    return ModuleEncoder(modality, model.encoders[modality], pre,
                         identity={"kind": "mmdistill", "modality": modality})


@PRETRAINED_ENCODERS.register("torch", modality=None, finetunable=True, needs=None)
def torch_encoder(*, modality: str, path: str | None, preprocessing: PreprocessSpec | None = None,
                  module: str | None = None, kwargs: dict[str, Any] | None = None,
                  out_dim: int | None = None) -> ModuleEncoder:
    """A user encoder class registered in TORCH_MODULES by a plugin; .safetensors weights from path.

    Inputs are made by mmdistill transforms with ``teacher.preprocessing.<modality>``."""
    key = f"teacher.pretrained.{modality}"
    if not module:
        raise ConfigError(f"{key}.kwargs.module: encoder 'torch' needs the TORCH_MODULES name of your class "
                          f"(registered by a module in plugins); registered: "
                          f"{', '.join(TORCH_MODULES.names()) or '(none)'}")
    if preprocessing is None or getattr(preprocessing, modality) is None:
        raise ConfigError(f"teacher.preprocessing.{modality}: encoder 'torch' reads mmdistill-preprocessed "
                          f"{modality}; declare its settings there")
    cls = TORCH_MODULES.get(module, key=f"{key}.kwargs.module")
    net = build_module(cls, kwargs, key=f"{key}.kwargs.kwargs", name=module)
    if path:
        load_weights_(net, path)
    return ModuleEncoder(modality, net, preprocessing, out_dim=out_dim,
                         identity={"kind": "torch", "module": module, "kwargs": kwargs or {}})
