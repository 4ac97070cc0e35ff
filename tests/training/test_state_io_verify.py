"""Tensor files of resume states carry a digest; load_tensor_file refuses pickles and changed tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmdistill.errors import CheckpointError
from mmdistill.training.state_io import DIGEST_KEY, atomic_save_tensors, load_tensor_file, tensors_digest

FIX = "delete the resume folder to start over"


def tensors() -> dict[str, torch.Tensor]:
    return {
        "model/w": torch.arange(6, dtype=torch.float32).view(2, 3),
        "rng/torch": torch.get_rng_state(),
        "flag": torch.tensor([True, False]),
        "half": torch.ones(2, dtype=torch.bfloat16),
    }


def test_round_trip_is_verified_and_the_digest_covers_names_shapes_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "epoch-0001.safetensors"
    t = tensors()
    atomic_save_tensors(path, t, {"epoch": "1"})
    back = load_tensor_file(path, fix=FIX)
    assert set(back) == set(t) and all(torch.equal(back[k], t[k]) for k in t)
    digest = tensors_digest(t)
    assert digest != tensors_digest({**t, "model/w": t["model/w"].view(3, 2)})  # same bytes, other shape
    assert digest != tensors_digest({"model/v" if k == "model/w" else k: v for k, v in t.items()})
    assert digest != tensors_digest({**t, "model/w": t["model/w"] + 1})


def test_a_changed_tensor_is_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "epoch-0002.safetensors"
    atomic_save_tensors(path, tensors(), {"epoch": "2"})
    state = load_file(str(path))
    state["model/w"][0, 0] = 99.0
    save_file(state, str(path), metadata={"epoch": "2", DIGEST_KEY: tensors_digest(tensors())})
    with pytest.raises(
        CheckpointError,
        match=rf"^{path}: the tensors do not match the sha256 stored with them .*; "
        f"{FIX}$",
    ):
        load_tensor_file(path, fix=FIX)


def test_pickles_and_garbage_are_refused_and_old_files_load_unverified(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    pt = tmp_path / "epoch-0001.safetensors"

    class Trap:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    torch.save({"x": Trap()}, pt)
    with pytest.raises(
        CheckpointError,
        match=rf"^{pt}: is a zip archive, as torch.save writes .* refused \(never "
        rf"unpickled\); {FIX}$",
    ):
        load_tensor_file(pt, fix=FIX)
    assert not marker.exists()
    pt.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match=rf"^{pt}: unreadable tensor file"):
        load_tensor_file(pt, fix=FIX)
    save_file({"a": torch.ones(2)}, str(pt))  # written before the digest existed
    assert torch.equal(load_tensor_file(pt, fix=FIX)["a"], torch.ones(2))
