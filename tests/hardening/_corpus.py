"""Builders of the bad-input corpus: every file is generated in ``tmp_path`` (nothing binary is
committed). Import as ``from _corpus import ...`` (``conftest.py`` puts this folder on ``sys.path``).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny valid-looking 8-bit grey PNG whose header declares ``width x height`` pixels.

    The data is a few bytes: decoding would need width*height bytes (a decompression bomb).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def image_bytes(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def wav_bytes(data: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def tone(seconds: float, rate: int, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def jsonl(root: Path, rows: list[dict[str, Any] | str], name: str = "m.jsonl") -> Path:
    """Write rows (dicts as JSON, strings verbatim) one per line; surrogates pass through as escapes."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path = root / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def laughs(levels: int, key: str = "plugins") -> str:
    """A "billion laughs" YAML: ``levels`` nested aliases, each 10 times the one before, under ``key``."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\n{key}: *l{levels - 1}\n"


GOOD = {"id": "good", "text": "a good row", "label": "a", "split": "train"}
"""A row that is always fine: with it, every manifest has a train label ``a``."""
