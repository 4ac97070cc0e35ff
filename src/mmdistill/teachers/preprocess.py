"""A teacher's own preprocessing of raw records, declared apart from the student's.

:class:`PreprocessSpec` holds plain settings (those of ``data.image`` / ``data.audio`` plus a
tokenizer file and length for text) and builds a :class:`~mmdistill.data.preprocess.Preprocessor`
from them; :meth:`PreprocessSpec.describe` is what goes into the teacher's fingerprint (the
tokenizer by its sha256, so a retrained tokenizer invalidates cached outputs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdistill import MODALITIES
from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.transforms.audio import LogMel
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.data.transforms.text import TextTokenizer
from mmdistill.errors import ConfigError

IMAGE_KEYS = ("size", "channels", "mean", "std")
AUDIO_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "max_seconds")
TEXT_KEYS = ("tokenizer", "max_length")


def _check(section: str, settings: Mapping[str, Any] | None, keys: Sequence[str]) -> dict[str, Any] | None:
    if settings is None:
        return None
    unknown = sorted(set(settings) - set(keys))
    if unknown:
        raise ConfigError(f"teacher.preprocessing.{section}: unknown key(s) {unknown}; "
                          f"accepted: {', '.join(keys)}")
    return dict(settings)


@dataclass
class PreprocessSpec:
    """Per-modality preprocessing settings of a teacher (None = the teacher does not read it).

    Args:
        image: :class:`~mmdistill.data.transforms.image.ImageTransform` kwargs (size, channels, mean, std).
        audio: :class:`~mmdistill.data.transforms.audio.LogMel` kwargs (sample_rate, n_fft,
            hop_length, n_mels, f_min, f_max, max_seconds); records at another rate are resampled.
        text: ``{"tokenizer": path to a tokenizer.json (PAD = 0), "max_length": int}``.
    """

    image: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    _tok: TextTokenizer | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.image = _check("image", self.image, IMAGE_KEYS)
        self.audio = _check("audio", self.audio, AUDIO_KEYS)
        self.text = _check("text", self.text, TEXT_KEYS)
        if self.text is not None and not self.text.get("tokenizer"):
            raise ConfigError("teacher.preprocessing.text.tokenizer: a teacher that reads text needs its "
                              "tokenizer.json; set the path")

    @property
    def modalities(self) -> list[str]:
        """Modalities with settings, in canonical order."""
        return [m for m in MODALITIES if getattr(self, m) is not None]

    def tokenizer(self) -> TextTokenizer | None:
        """The text tokenizer (loaded once), or None without text."""
        if self.text is not None and self._tok is None:
            self._tok = TextTokenizer.load(self.text["tokenizer"])
        return self._tok

    def preprocessor(self, modalities: Sequence[str] | None = None) -> Preprocessor:
        """The :class:`Preprocessor` for ``modalities`` (default: every modality with settings)."""
        mods = list(modalities) if modalities is not None else self.modalities
        missing = [m for m in mods if getattr(self, m) is None]
        if missing:
            raise ConfigError(f"teacher.preprocessing: no settings for {missing}; the teacher reads them")
        return Preprocessor(
            image=ImageTransform(**self.image) if self.image is not None and "image" in mods else None,
            audio=LogMel(**self.audio) if self.audio is not None and "audio" in mods else None,
            tokenizer=self.tokenizer() if "text" in mods else None,
            max_text_length=int((self.text or {}).get("max_length", 32)),
            modalities=mods,
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> PreprocessSpec:
        """Rebuild from :meth:`settings` or :meth:`describe` output (extra digests are dropped)."""
        s = dict(settings or {})
        text = s.get("text")
        if text is not None:
            text = {k: v for k, v in text.items() if k != "tokenizer_sha256"}
        return cls(image=s.get("image"), audio=s.get("audio"), text=text)

    def settings(self) -> dict[str, Any]:
        """The constructor arguments as JSON (what ``pretrained_<m>`` specs and ``teacher.json`` hold)."""
        return {"image": self.image, "audio": self.audio, "text": self.text}

    def describe(self) -> dict[str, Any]:
        """:meth:`settings` plus the tokenizer's sha256: what fingerprints hash."""
        out: dict[str, Any] = self.settings()
        if self.text is not None:
            path = Path(self.text["tokenizer"])
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            out["text"] = {**self.text, "tokenizer": str(path), "tokenizer_sha256": digest}
        return out


def checkpoint_preprocessing(path: str | Path, extra: Mapping[str, Any],
                             modalities: Sequence[str]) -> PreprocessSpec:
    """The preprocessing a saved mmdistill model was trained with (``model.json`` ``extra``).

    Text uses the tokenizer named in ``extra["tokenizer"]``, looked up next to the checkpoint and in
    its run folder (the checkpoint's parent).

    Raises:
        CheckpointError: the settings of one of ``modalities`` or the tokenizer file are missing.
    """
    from mmdistill.errors import CheckpointError

    folder = Path(path)
    settings = dict(extra.get("preprocessing") or {})
    spec: dict[str, Any] = {}
    for m in modalities:
        if m == "text":
            name = extra.get("tokenizer") or "tokenizer.json"
            tok = next((d / name for d in (folder, folder.parent) if (d / name).is_file()), None)
            if tok is None:
                raise CheckpointError(f"{folder}: its text encoder needs {name} next to it or in its run "
                                      f"folder")
            length = int((settings.get("text") or {}).get("max_length", 32))
            spec["text"] = {"tokenizer": str(tok), "max_length": length}
        elif settings.get(m):
            spec[m] = dict(settings[m])
        else:
            raise CheckpointError(f"{folder}: model.json holds no {m} preprocessing settings "
                                  f"(extra.preprocessing."
                                  f"{m}); re-save it with mmdistill's train recipe")
    return PreprocessSpec(**spec)
