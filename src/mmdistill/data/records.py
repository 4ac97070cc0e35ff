"""Raw records: one decoded-but-not-yet-preprocessed sample, as datasets read it from disk.

Datasets (the manifest reader, the built-in dataset) produce :class:`RawSample`; a
:class:`~mmdistill.data.preprocess.Preprocessor` turns it into the tensor sample of
:mod:`mmdistill.data.batch`. Keeping the two apart lets the student and a teacher with its own
preprocessing read the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RawSample:
    """One sample before preprocessing; any modality may be None (absent).

    Attributes:
        id: unique id within the dataset.
        label: class index of the primary task.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image: uint8 array ``[H, W]`` (grey) or ``[H, W, C]`` (C = 3 for RGB), or None.
        text: the text string, or None.
        audio: float32 mono waveform ``[N]`` in [-1, 1] at ``sample_rate``, or None.
        sample_rate: rate of ``audio`` in Hz (ignored when audio is None).
        tasks: extra task labels for multi-task heads, task name → class index.
        meta: provenance (source file, voice, degradation applied, ...), JSON-serializable.
    """

    id: str
    label: int
    split: str
    image: np.ndarray | None = None
    text: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int = 16000
    tasks: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def modalities(self) -> list[str]:
        """Modalities present in this record, in canonical order."""
        have = {"image": self.image, "text": self.text, "audio": self.audio}
        return [m for m in ("image", "text", "audio") if have[m] is not None]


SPLITS: tuple[str, ...] = ("train", "val", "test")
