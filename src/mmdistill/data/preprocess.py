"""Turn :class:`~mmdistill.data.records.RawSample` records into tensor samples.

A :class:`Preprocessor` bundles one transform per modality. The teacher and the student may
each have their own (different image size, mel settings, vocabulary) over the same records.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from mmdistill import MODALITIES
from mmdistill.data.batch import Sample
from mmdistill.data.records import RawSample
from mmdistill.data.transforms.audio import LogMel, resample
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.data.transforms.text import TextTokenizer


class Preprocessor:
    """RawSample → sample dict (see :mod:`mmdistill.data.batch`).

    A modality is kept when it is in ``modalities`` **and** its transform is given; a record's
    modality that is absent (None) stays absent. Audio at another rate than ``audio.sample_rate``
    is resampled first.

    Args:
        image: image transform, or None to drop images.
        audio: log-mel transform, or None to drop audio.
        tokenizer: text tokenizer, or None to drop text.
        max_text_length: text is truncated to this many tokens.
        modalities: modalities to keep (default: all).

    Shapes:
        output: ``image [C, S, S]``, ``text [T]`` (1 <= T <= max_text_length), ``audio [n_mels, F]``.
    """

    def __init__(
        self,
        image: ImageTransform | None = None,
        audio: LogMel | None = None,
        tokenizer: TextTokenizer | None = None,
        max_text_length: int = 32,
        modalities: Sequence[str] = MODALITIES,
    ) -> None:
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; choose from {list(MODALITIES)}")
        if max_text_length < 1:
            raise ValueError(f"max_text_length must be >= 1, got {max_text_length}")
        self.image = image
        self.audio = audio
        self.tokenizer = tokenizer
        self.max_text_length = int(max_text_length)
        have = {"image": image is not None, "text": tokenizer is not None, "audio": audio is not None}
        self.modalities: tuple[str, ...] = tuple(m for m in MODALITIES if m in modalities and have[m])

    def __repr__(self) -> str:
        return (f"Preprocessor(image={self.image!r}, audio={self.audio!r}, "
                f"tokenizer={self.tokenizer is not None}, max_text_length={self.max_text_length}, "
                f"modalities={self.modalities})")

    def _base(self, raw: RawSample) -> Sample:
        sample: Sample = {"id": raw.id, "label": int(raw.label)}
        if raw.tasks:
            sample["tasks"] = {k: int(v) for k, v in raw.tasks.items()}
        return sample

    def _wave(self, raw: RawSample) -> torch.Tensor:
        assert self.audio is not None and raw.audio is not None
        wave = raw.audio
        if raw.sample_rate != self.audio.sample_rate:
            wave = resample(wave, raw.sample_rate, self.audio.sample_rate)
        return torch.from_numpy(wave.astype("float32", copy=True))

    def __call__(self, raw: RawSample) -> Sample:
        """Preprocess one record."""
        sample = self._base(raw)
        if "image" in self.modalities and raw.image is not None:
            assert self.image is not None
            sample["image"] = self.image(raw.image)
        if "text" in self.modalities and raw.text is not None:
            assert self.tokenizer is not None
            sample["text"] = self.tokenizer.encode(raw.text, self.max_text_length)
        if "audio" in self.modalities and raw.audio is not None:
            assert self.audio is not None
            sample["audio"] = self.audio(self._wave(raw))
        return sample

    def process_all(
        self, raws: Sequence[RawSample], *, desc: str = "preprocessing", progress: bool = True,
        chunk_size: int = 512,
    ) -> list[Sample]:
        """Preprocess many records, batching tokenization and log-mel (same result as calling
        the preprocessor on each record).

        Args:
            raws: the records.
            desc: progress bar label.
            progress: show a tqdm progress bar.
            chunk_size: records per batched log-mel / tokenizer call.

        Returns:
            one sample per record, in order.
        """
        out: list[Sample] = []
        with tqdm(total=len(raws), desc=desc, disable=not progress, unit="sample") as bar:
            for start in range(0, len(raws), chunk_size):
                chunk = raws[start : start + chunk_size]
                samples = [self._base(r) for r in chunk]
                if "image" in self.modalities:
                    assert self.image is not None
                    for s, r in zip(samples, chunk, strict=True):
                        if r.image is not None:
                            s["image"] = self.image(r.image)
                if "text" in self.modalities:
                    assert self.tokenizer is not None
                    idx = [i for i, r in enumerate(chunk) if r.text is not None]
                    ids = self.tokenizer.encode_batch([chunk[i].text for i in idx], self.max_text_length)
                    for i, t in zip(idx, ids, strict=True):
                        samples[i]["text"] = t
                if "audio" in self.modalities:
                    assert self.audio is not None
                    idx = [i for i, r in enumerate(chunk) if r.audio is not None]
                    feats = self.audio.batch([self._wave(chunk[i]) for i in idx])
                    for i, f in zip(idx, feats, strict=True):
                        samples[i]["audio"] = f
                out.extend(samples)
                bar.update(len(chunk))
        return out
