"""Fixtures of the bad-input corpus (tests/hardening): dataset folders generated in ``tmp_path``.

Helpers shared by the test modules live in :mod:`_corpus`; this folder is put on ``sys.path``
so ``from _corpus import ...`` works in every pytest import mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from _corpus import tone, wav_bytes  # noqa: E402 - needs the path above


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    """A dataset folder with a few good media files: ``img/ok.png`` (grey 4x4), ``aud/ok.wav``."""
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "aud").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), 7, dtype=np.uint8)).save(root / "img" / "ok.png")
    (root / "aud" / "ok.wav").write_bytes(wav_bytes(tone(0.1, 16000), 16000))
    return root
