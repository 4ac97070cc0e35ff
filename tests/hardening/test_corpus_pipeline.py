"""The whole working corpus through the real data path at once: one manifest listing every unusual
image and audio file (plus odd text) → read_manifest → Preprocessor → collate: one finite batch."""

from __future__ import annotations

from pathlib import Path

import test_audio
import test_images
import torch
from _corpus import jsonl

from mmdistill.data.collate import collate
from mmdistill.data.datasets.manifest import read_manifest
from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.transforms.audio import LogMel
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.data.transforms.text import TextTokenizer


def test_every_working_case_preprocesses_into_one_finite_batch(ds: Path) -> None:
    rows = []
    for name, (data, fname, *_) in sorted(test_images.WORKS.items()):
        rel = f"img/{name}{Path(fname).suffix}"
        (ds / rel).write_bytes(data)
        rows.append({"id": f"img-{name}", "image": rel, "text": name, "label": "a", "split": "train"})
    for name, (data, fname, *_) in sorted(test_audio.WORKS.items()):
        rel = f"aud/{name}{Path(fname).suffix}"
        (ds / rel).write_bytes(data)
        rows.append({"id": f"aud-{name}", "audio": rel, "label": "b", "split": "train"})
    rows.append({"id": "txt", "text": "ünïcödé 🐈 \x00 שלום", "label": "b", "split": "train"})
    md = read_manifest(jsonl(ds, rows), progress=False)
    assert md.skipped == [] and len(md.records) == len(rows)
    tok = TextTokenizer.train([r.text for r in md.records if r.text], vocab_size=200)
    pre = Preprocessor(
        ImageTransform(size=8, channels=3), LogMel(n_mels=16, max_seconds=1.0), tok, max_text_length=8
    )
    samples = pre.process_all(md.records, progress=False)
    assert [s["id"] for s in samples] == [r["id"] for r in rows]
    batch = collate(samples)
    n_img, n_aud = len(test_images.WORKS), len(test_audio.WORKS)
    assert batch["image"].shape == (len(rows), 3, 8, 8) and batch["audio"].shape[:2] == (len(rows), 16)
    assert batch["present"]["image"].sum() == n_img and batch["present"]["audio"].sum() == n_aud
    assert batch["audio"].shape[2] == 101  # the 30 s clip is center-cropped to 1 s
    for key in ("image", "audio"):
        assert bool(torch.isfinite(batch[key]).all()), key
