"""Preprocessor: per-modality transforms, filtering, resampling, and batched == single."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.records import RawSample
from mmdistill.data.transforms.audio import LogMel
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.data.transforms.text import TextTokenizer


@pytest.fixture(scope="module")
def pre() -> Preprocessor:
    tok = TextTokenizer.train(["one two three", "four five six"], vocab_size=60)
    return Preprocessor(ImageTransform(size=8), LogMel(n_mels=16), tok, max_text_length=4)


def _raws() -> list[RawSample]:
    rng = np.random.default_rng(0)
    return [
        RawSample("a", 1, "train", image=rng.integers(0, 255, (12, 12), dtype=np.uint8),
                  text="one two three four", audio=rng.standard_normal(16000).astype(np.float32),
                  tasks={"parity": 1}),
        RawSample("b", 0, "train", text="five", audio=rng.standard_normal(4000).astype(np.float32),
                  sample_rate=8000),
        RawSample("c", 2, "val", image=rng.integers(0, 255, (5, 9, 3), dtype=np.uint8)),
    ]


def test_call_shapes_and_fields(pre: Preprocessor) -> None:
    a, b, c = (pre(r) for r in _raws())
    assert a["id"] == "a" and a["label"] == 1 and a["tasks"] == {"parity": 1}
    assert a["image"].shape == (1, 8, 8) and a["audio"].shape == (16, 101)
    assert a["text"].dtype == torch.long and len(a["text"]) == 4  # truncated to max_text_length
    # 0.5 s at 8 kHz is resampled to 8000 samples at 16 kHz → 1 + 8000 // 160 frames.
    assert b["audio"].shape == (16, 51) and "image" not in b and "tasks" not in b
    assert set(c) == {"id", "label", "image"}


def test_modalities_filter() -> None:
    p = Preprocessor(ImageTransform(size=8), LogMel(n_mels=16), None, modalities=("audio", "text"))
    assert p.modalities == ("audio",)  # text has no tokenizer, image is not asked for
    out = p(_raws()[0])
    assert set(out) == {"id", "label", "tasks", "audio"}
    with pytest.raises(ValueError, match="unknown modalities"):
        Preprocessor(modalities=("video",))


def test_process_all_matches_call(pre: Preprocessor) -> None:
    raws = _raws() * 3
    batched = pre.process_all(raws, desc="t", progress=False, chunk_size=4)
    assert len(batched) == len(raws)
    for r, s in zip(raws, batched, strict=True):
        single = pre(r)
        assert set(single) == set(s)
        for k, v in single.items():
            if isinstance(v, torch.Tensor):
                torch.testing.assert_close(s[k], v, atol=1e-4, rtol=1e-5)
            else:
                assert s[k] == v
