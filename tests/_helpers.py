"""Tiny models, batches and a short training loop shared by the compression, export and evaluation tests.

Import as ``from _helpers import tiny_model`` (``tests/conftest.py`` puts this folder on ``sys.path``).
Everything is seeded, so two tests asking for the same arguments get the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.multimodal import MultimodalModel

ALL: tuple[str, ...] = ("image", "text", "audio")


def tiny_model(
    modalities: Sequence[str] = ALL,
    *,
    preset: str = "tiny",
    vocab: int = 40,
    mels: int = 8,
    num_classes: int = 4,
    seed: int = 0,
    **spec_kwargs: Any,
) -> MultimodalModel:
    """``build_model(model_spec(preset, ...))`` under ``torch.manual_seed(seed)``, in eval mode.

    ``spec_kwargs`` go to :func:`~mmdistill.models.builders.model_spec` (``encoders``, ``fusion``, ``head``).
    """
    torch.manual_seed(seed)
    spec = model_spec(preset, modalities=modalities, num_classes=num_classes, vocab_size=vocab, n_mels=mels,
                      **spec_kwargs)
    return build_model(spec).eval()


def tiny_batch(rows: int = 6, *, seed: int = 0, vocab: int = 40, mels: int = 8) -> dict[str, Any]:
    """A collated-layout batch with every modality present, built by hand (no collate).

    Shapes:
        image ``[rows, 1, 12, 12]``, text ``[rows, 6]`` (lengths 2..6, padded with 0), audio
        ``[rows, mels, 10]`` (full length), labels in ``0..3``.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 7, (rows,), generator=g)
    pad = torch.arange(6) >= lengths[:, None]
    text = torch.randint(1, vocab, (rows, 6), generator=g).masked_fill(pad, 0)
    ones = torch.ones(rows, dtype=torch.bool)
    return {"id": [str(i) for i in range(rows)], "label": torch.randint(0, 4, (rows,), generator=g),
            "image": torch.randn(rows, 1, 12, 12, generator=g), "text": text,
            "audio": torch.randn(rows, mels, 10, generator=g),
            "lengths": {"text": lengths, "audio": torch.full((rows,), 10)},
            "present": {"image": ones, "text": ones, "audio": ones}}


def train_briefly(
    model: MultimodalModel, batches: Sequence[dict[str, Any]], *, epochs: int = 3, lr: float = 3e-3
) -> MultimodalModel:
    """Adam on cross-entropy over ``batches`` for ``epochs`` passes, on one thread; returns it in eval mode.

    A model this small trains about 4x faster on one thread of the shared 2-core VM; the previous
    thread count is restored.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            for batch in batches:
                loss = torch.nn.functional.cross_entropy(model(batch).logits, batch["label"])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def write_manifest(root: Any, classes: Sequence[str] = ("low", "high"), n_per_class: int = 6, *,
                   rate: int = 8000, image_size: int = 20) -> Any:
    """A tiny JSONL manifest with PNG images, WAV tones and phrases under ``root``; returns its path.

    Class ``k`` has a bright band at rows ``k`` of the image (one band per class), a tone of
    ``300 + 1500 k`` Hz (0.4 s, at ``rate``: 8 kHz is not the models' 16 kHz, so readers resample)
    and the text ``"a <class> sound"``. Per class, the last row is test, the one before val, the rest
    train; row 0 of each class has no audio (a missing modality).
    """
    import json
    from pathlib import Path

    import numpy as np
    import soundfile as sf
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    band = max(1, image_size // max(len(classes), 1))
    rows = []
    for k, label in enumerate(classes):
        for i in range(n_per_class):
            img = rng.integers(0, 40, (image_size, image_size)).astype(np.uint8)
            img[k * band:(k + 1) * band] = 220
            Image.fromarray(img).save(root / f"{label}{i}.png")
            t = np.arange(int(0.4 * rate)) / rate
            wave = (0.3 * np.sin(2 * np.pi * (300 + 1500 * k) * t)).astype(np.float32)
            sf.write(root / f"{label}{i}.wav", wave, rate)
            split = "train" if i < n_per_class - 2 else ("val" if i == n_per_class - 2 else "test")
            row = {"id": f"{label}{i}", "image": f"{label}{i}.png", "audio": f"{label}{i}.wav",
                   "text": f"a {label} sound", "label": label, "split": split}
            if i == 0:
                del row["audio"]
            rows.append(row)
    path = root / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def torchrun(*args: str) -> list[str]:
    """The ``torchrun`` launcher next to this interpreter, followed by ``args``."""
    import sys
    from pathlib import Path

    return [str(Path(sys.executable).parent / "torchrun"), *args]


def launcher_env() -> dict[str, str]:
    """``os.environ`` for a child launched by torchrun: one thread per process, and none of the
    rendezvous variables (``RANK``, ``WORLD_SIZE``, ...) of a parent that runs under torchrun itself."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def run_cli_torchrun(args: Sequence[str], cwd: Any, *, nproc: int = 2, timeout: float = 300) -> Any:
    """``torchrun --standalone --nproc_per_node=<nproc> -m mmdistill.cli.main <args>`` in ``cwd``;
    returns the finished ``subprocess.CompletedProcess`` (text output captured)."""
    import subprocess

    return subprocess.run(
        [*torchrun("--standalone", f"--nproc_per_node={nproc}"), "-m", "mmdistill.cli.main", *args],
        cwd=cwd, env=launcher_env(), capture_output=True, text=True, timeout=timeout,
    )


def run_cli(args: Sequence[str], cwd: Any, *, kill_at: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 300) -> Any:
    """``python -m mmdistill.cli.main <args>`` in ``cwd``, optionally SIGKILLing itself at the test-only
    point ``kill_at`` (:mod:`mmdistill.training.kill_hook`); ``env`` entries are added to
    ``os.environ`` (``COLUMNS=300``: one log record per line). Returns the finished
    ``subprocess.CompletedProcess`` (text output captured)."""
    import os
    import subprocess
    import sys

    from mmdistill.training.kill_hook import KILL_ENV

    child = {**os.environ, "COLUMNS": "300", **(env or {})}
    child.pop(KILL_ENV, None)
    if kill_at is not None:
        child[KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "mmdistill.cli.main", *args], cwd=cwd, env=child,
                          capture_output=True, text=True, timeout=timeout)
