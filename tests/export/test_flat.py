"""The torch-free half of the flat batch layout: import without torch, fillers, completed feeds."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from mmdistill.export import onnx as export_onnx_module
from mmdistill.export.flat import ORT_DTYPES, complete_feeds, filler_array


@dataclass
class Arg:
    """Stands in for ``onnxruntime.NodeArg``."""

    name: str
    type: str
    shape: list[int | str | None]


def test_importing_flat_does_not_import_torch() -> None:
    code = "import sys, mmdistill.export.flat; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_onnx_module_re_exports_the_flat_functions() -> None:
    from mmdistill.export import flat

    for name in ("batch_to_flat", "flat_to_batch", "save_flat_batch", "load_flat_batch", "BATCH_FORMAT"):
        assert getattr(export_onnx_module, name) is getattr(flat, name), name


def test_filler_puts_rows_first_and_one_step_on_dynamic_axes() -> None:
    got = filler_array(["batch", 1, 16, "audio_frames"], 3, np.float32)
    assert got.shape == (3, 1, 16, 1) and got.dtype == np.float32 and not got.any()
    # A static batch axis in the graph is overridden by the rows; None and 0 count as dynamic.
    assert filler_array([1, None, 0, 5], 4, np.int64).shape == (4, 1, 1, 5)
    assert filler_array(["batch"], 2, np.bool_).tolist() == [False, False]


def test_complete_feeds_keeps_given_arrays_and_fills_the_rest_in_graph_order() -> None:
    text = np.arange(6, dtype=np.int64).reshape(2, 3)
    arrays = {"text": text, "text_lengths": np.array([3, 2]), "label": np.array([0, 1])}
    inputs = [Arg("image", "tensor(float)", ["batch", 1, 8, 8]),
              Arg("image_present", "tensor(bool)", ["batch"]),
              Arg("text", "tensor(int64)", ["batch", "text_steps"]),
              Arg("text_lengths", "tensor(int64)", ["batch"])]
    feeds = complete_feeds(arrays, inputs, source="b.safetensors")
    assert list(feeds) == ["image", "image_present", "text", "text_lengths"]  # no label: not a graph input
    assert feeds["text"] is text
    assert feeds["image"].shape == (2, 1, 8, 8) and feeds["image"].dtype == ORT_DTYPES["tensor(float)"]
    assert feeds["image_present"].dtype == np.bool_ and not feeds["image_present"].any()


def test_complete_feeds_errors_name_the_file() -> None:
    with pytest.raises(ValueError, match=r"b\.st: batch file holds no tensor"):
        complete_feeds({"x": np.ones(())}, [], source="b.st")
    with pytest.raises(ValueError, match=r"b\.st: lacks input 'audio' of unsupported type tensor\(double\)"):
        complete_feeds({"label": np.zeros(2)}, [Arg("audio", "tensor(double)", ["batch"])], source="b.st")
