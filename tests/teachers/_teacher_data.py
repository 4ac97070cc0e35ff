"""Tiny raw records and models for the teacher tests (``from _teacher_data import make_records``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdistill.data.records import RawSample

WORDS = ["zero", "one", "two", "three"]


def make_records(n: int = 12, *, seed: int = 0, rate: int = 16000, absent: bool = True) -> list[RawSample]:
    """``n`` records of 4 classes: a 12x12 image, a phrase, a 0.2-0.45 s tone (pitch = class).

    With ``absent``, record 1 has no audio, record 2 no text and record 3 no image.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % 4
        t = np.arange(int(rate * (0.2 + 0.05 * (i % 6)))) / rate
        audio = (0.3 * np.sin(2 * np.pi * (300 + 150 * label) * t) + 0.01 * rng.standard_normal(t.size))
        image = rng.integers(0, 60, (12, 12)).astype(np.uint8)
        image[label * 3:label * 3 + 3, :] = 250
        out.append(RawSample(
            id=f"r{i:03d}", label=label, split="train", image=None if absent and i == 3 else image,
            text=None if absent and i == 2 else f"the number {WORDS[label]}",
            audio=None if absent and i == 1 else audio.astype(np.float32), sample_rate=rate,
        ))
    return out


def save_tiny_bert(folder: Path, vocab: Sequence[str], *, classifier: bool = False, num_labels: int = 2,
                   seed: int = 0) -> Path:
    """A 2-layer, 16-wide random BERT (+ its tokenizer over ``vocab``) saved with save_pretrained;
    nothing downloaded (skips the test without ``transformers``)."""
    transformers = pytest.importorskip("transformers", reason="Hugging Face teachers need "
                                                              "mmdistill[pretrained-text]")
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                  num_labels=num_labels)
    model = (transformers.BertForSequenceClassification if classifier else transformers.BertModel)(cfg)
    model.save_pretrained(str(folder))
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(str(folder))
    return folder
