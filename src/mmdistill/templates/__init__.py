"""Starter folders written by ``mmdistill init TEMPLATE DIR``.

Templates:

- ``manifest``: ``config.yaml`` reading ``manifest.jsonl`` (a toy dataset of 12 rows over image,
  text and audio, some rows missing a modality, in the format of ``docs/data.md``), the example
  images (PNG) and sounds (WAV) those rows point at, generated here so the example runs as it is,
  and a ``README.md`` that says what to replace.
- ``builtin``: ``config.yaml``, the packaged demo config (built-in dataset) with its comments.

Nothing is overwritten unless asked (``force=True``); torch is never imported.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mmdistill.errors import MMDistillError

MEDIA_DIR = "media"
_SAMPLE_RATE = 8000  # Hz; not the config's 16 kHz on purpose: the reader resamples
_TONES = {"low": 300.0, "high": 1800.0}  # Hz, the tone of each toy class


@dataclass(frozen=True)
class Template:
    """A starter folder: its packaged files and whether it needs generated example media."""

    name: str
    description: str
    files: tuple[str, ...]
    media: bool = False


TEMPLATES: dict[str, Template] = {
    "manifest": Template(
        "manifest",
        "your own data: config.yaml + manifest.jsonl (image/text/audio rows) + example media",
        ("config.yaml", "manifest.jsonl", "README.md"),
        media=True,
    ),
    "builtin": Template("builtin", "the demo on the built-in dataset: config.yaml with comments",
                        ("config.yaml",)),
}

_BUILTIN_HEADER = """\
# Written by `mmdistill init builtin`: the packaged demo config (mmdistill run default), to edit.
#   Check it:  mmdistill validate config.yaml     Run it:  mmdistill run config.yaml
#   Quicker:   mmdistill run config.yaml data.limit=1000 teacher.train.epochs=2
# Your own data instead: `mmdistill init manifest DIR`. Every key: docs/config.md.
"""


class TemplateError(MMDistillError):
    """An unknown template, or files that would be overwritten."""


def get_template(name: str) -> Template:
    """The template called ``name``.

    Raises:
        TemplateError: unknown name, with a did-you-mean and the list.
    """
    if name in TEMPLATES:
        return TEMPLATES[name]
    close = difflib.get_close_matches(name, TEMPLATES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise TemplateError(f"unknown template '{name}'; {hint}available: {', '.join(TEMPLATES)} "
                        "(mmdistill init --list)")


def _packaged_text(template: str, file: str) -> str:
    if template == "builtin":
        from mmdistill.config.loading import packaged_config_dir

        return _BUILTIN_HEADER + (packaged_config_dir() / "default.yaml").read_text(encoding="utf-8")
    return resources.files(__package__).joinpath(template, file).read_text(encoding="utf-8")


def manifest_rows(text: str) -> list[dict]:
    """The rows of a JSONL manifest text (blank lines skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def planned_files(name: str, dest: Path) -> list[Path]:
    """Every file :func:`write_template` would write for ``name`` into ``dest``."""
    template = get_template(name)
    paths = [dest / f for f in template.files]
    if template.media:
        for row in manifest_rows(_packaged_text(name, "manifest.jsonl")):
            paths += [dest / row[k] for k in ("image", "audio") if row.get(k)]
    return paths


def write_template(name: str, dest: Path, *, force: bool = False) -> list[Path]:
    """Write template ``name`` into folder ``dest`` (created if needed).

    Args:
        name: a key of :data:`TEMPLATES`.
        dest: the folder to write into.
        force: overwrite files that exist; otherwise nothing is written when any does.

    Returns:
        The files written.

    Raises:
        TemplateError: unknown template, or (without ``force``) files that already exist.
    """
    template = get_template(name)
    dest = Path(dest)
    paths = planned_files(name, dest)
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        shown = ", ".join(str(p) for p in existing[:5]) + (", ..." if len(existing) > 5 else "")
        raise TemplateError(f"{shown} already exist(s); pass --force to overwrite, or choose an empty "
                            "folder")
    dest.mkdir(parents=True, exist_ok=True)
    for file in template.files:
        (dest / file).write_text(_packaged_text(name, file), encoding="utf-8")
    if template.media:
        write_example_media(manifest_rows(_packaged_text(name, "manifest.jsonl")), dest)
    return paths


def write_example_media(rows: list[dict], root: Path) -> None:
    """Write the toy PNG/WAV files ``rows`` point at: a class-specific pattern and tone, plus noise.

    Class ``low``: the lower half of the image is bright and the sound is a 300 Hz tone; ``high``:
    the upper half and 1800 Hz, so the toy data is learnable from every modality.
    """
    import numpy as np
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    for row in rows:
        label = str(row["label"])
        if row.get("image"):
            img = np.zeros((32, 32, 3), np.uint8)
            rows_lit = slice(16, 32) if label == "low" else slice(0, 16)
            img[rows_lit] = (200, 160, 60)
            img = np.clip(img + rng.integers(0, 50, img.shape), 0, 255).astype(np.uint8)
            path = root / row["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path)
        if row.get("audio"):
            t = np.arange(int(0.5 * _SAMPLE_RATE)) / _SAMPLE_RATE
            tone = 0.3 * np.sin(2 * np.pi * _TONES.get(label, 1000.0) * t)
            wave = tone + 0.02 * rng.standard_normal(t.size)
            path = root / row["audio"]
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave.astype(np.float32), _SAMPLE_RATE)
