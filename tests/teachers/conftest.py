"""Fixtures of the teacher tests: tiny raw records, a tokenizer, and a clean ENCODERS registry.

The head-model encoders (``embedding_<m>``, ``pretrained_<m>``) are registered into the global
model ``ENCODERS`` by the code under test; every test here restores the registry afterwards, so
the registry-wide encoder tests elsewhere never see them whatever the test order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _teacher_data import WORDS, make_records

from mmdistill.data.records import RawSample
from mmdistill.data.transforms.text import TextTokenizer
from mmdistill.models.registries import ENCODERS


@pytest.fixture(autouse=True)
def _restore_encoders() -> Iterator[None]:
    saved = dict(ENCODERS._entries)
    yield
    ENCODERS._entries.clear()
    ENCODERS._entries.update(saved)


@pytest.fixture
def records() -> list[RawSample]:
    return make_records()


@pytest.fixture
def tokenizer_file(tmp_path: Path) -> Path:
    texts = [f"the number {w}" for w in WORDS] * 3
    return TextTokenizer.train(texts, vocab_size=40).save(tmp_path / "tok" / "tokenizer.json")
