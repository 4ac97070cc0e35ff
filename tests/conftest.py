"""Shared test set-up: puts ``tests/`` on ``sys.path`` so test modules can ``import _helpers``.

Test folders have no ``__init__.py`` (pytest imports each test file by its basename), so shared
helpers live in the top-level module :mod:`_helpers`. pytest's default ``prepend`` import mode
would add this folder anyway; doing it here keeps ``--import-mode=importlib`` working too.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
