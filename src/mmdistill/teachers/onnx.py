"""ONNX models run by ONNX Runtime: sessions whose inputs are checked, and a whole-model teacher.

A graph's inputs must match what the teacher's declared preprocessing feeds it (name, rank,
dtype, fixed sizes); a mismatch fails when the session opens, naming the file and the input,
instead of failing deep inside ``session.run``. ``onnxruntime`` is the ``mmdistill[onnx]`` extra.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmdistill.data.collate import collate
from mmdistill.errors import CheckpointError, ConfigError
from mmdistill.models.outputs import ModelOutput
from mmdistill.teachers.base import RawBatch, reject_batch
from mmdistill.teachers.deps import require
from mmdistill.teachers.fingerprint import combine, files_fingerprint, settings_fingerprint
from mmdistill.teachers.preprocess import PreprocessSpec

ORT_TYPES: dict[str, str] = {"float32": "tensor(float)", "int64": "tensor(int64)", "bool": "tensor(bool)"}
NP_TYPES: dict[str, type[np.generic]] = {"float32": np.float32, "int64": np.int64, "bool": np.bool_}


@dataclass(frozen=True)
class InputSpec:
    """One graph input as the teacher's preprocessing feeds it.

    Args:
        name: the graph input name.
        dtype: ``"float32"``, ``"int64"`` or ``"bool"``.
        shape: one entry per axis: a fixed size, or None where any size is fed (batch, length).
        source: the flat-batch entry fed to it (``image``, ``text``, ``text_lengths``,
            ``audio_present``, ...; see :func:`mmdistill.export.flat.batch_to_flat`); default ``name``.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    source: str | None = None

    @property
    def feed(self) -> str:
        return self.source or self.name


def mmdistill_inputs(preprocessing: PreprocessSpec) -> list[InputSpec]:
    """The inputs of a graph written by :func:`mmdistill.export.onnx.export_onnx` for a model over
    ``preprocessing.modalities``, with the sizes the preprocessing fixes (image channels and size,
    mel bands); batch and length axes are free."""
    out = []
    for m in preprocessing.modalities:
        if m == "image":
            size, channels = int(preprocessing.image["size"]), int(preprocessing.image.get("channels", 1))
            out.append(InputSpec(m, "float32", (None, channels, size, size)))
        elif m == "audio":
            out.append(InputSpec(m, "float32", (None, int(preprocessing.audio.get("n_mels", 40)), None)))
        else:
            out.append(InputSpec(m, "int64", (None, None)))
        if m != "image":
            out.append(InputSpec(f"{m}_lengths", "int64", (None,)))
        out.append(InputSpec(f"{m}_present", "bool", (None,)))
    return out


def check_inputs(path: str | Path, graph: Sequence[Any], declared: Sequence[InputSpec]) -> None:
    """Compare a session's inputs with the declared ones; every mismatch reported at once.

    Raises:
        CheckpointError: a declared input is missing from the graph, the graph needs an undeclared
            input, or a rank, dtype or fixed size differs.
    """
    by_name = {g.name: g for g in graph}
    problems = []
    for d in declared:
        g = by_name.get(d.name)
        if g is None:
            problems.append(f"input '{d.name}' is declared but the graph has none by that name")
            continue
        if g.type != ORT_TYPES.get(d.dtype):
            problems.append(f"input '{d.name}' is {g.type} in the graph, the preprocessing feeds {d.dtype}")
        if len(g.shape) != len(d.shape):
            problems.append(f"input '{d.name}' has rank {len(g.shape)} {list(g.shape)} in the graph, the "
                            f"preprocessing feeds rank {len(d.shape)} {list(d.shape)}")
            continue
        for axis, (gd, dd) in enumerate(zip(g.shape, d.shape, strict=True)):
            if isinstance(gd, int) and dd is not None and gd != dd:
                problems.append(f"input '{d.name}' axis {axis} is {gd} in the graph, the preprocessing "
                                f"feeds {dd}")
    names = {d.name for d in declared}
    problems += [f"the graph needs input '{g.name}' ({g.type} {list(g.shape)}), which is not declared"
                 for g in graph if g.name not in names]
    if problems:
        takes = ", ".join(f"{g.name}: {g.type} {list(g.shape)}" for g in graph)
        raise CheckpointError(f"{path}: the ONNX inputs do not match the declared preprocessing: "
                              f"{'; '.join(problems)}. The graph takes {takes}; fix the teacher's 'inputs' "
                              "(or its preprocessing) or re-export the model")


def open_session(path: str | Path, inputs: Sequence[InputSpec], *, threads: int | None = None,
                 purpose: str = "an ONNX teacher") -> Any:
    """An ``onnxruntime.InferenceSession`` on CPU whose inputs were checked against ``inputs``.

    Raises:
        MissingDependencyError: onnxruntime is not installed (``mmdistill[onnx]``).
        CheckpointError: the file is missing or not a loadable model, or the inputs mismatch.
    """
    ort = require("onnxruntime", purpose)
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: ONNX model file not found; check the path")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    # As livekit-wakeword does: onnxruntime's KleidiAI kernels (arm64) return wrong batch-1 convolutions.
    options.add_session_config_entry("mlas.disable_kleidiai", "1")
    state = ort.capi.onnxruntime_pybind11_state
    errors = tuple(getattr(state, n) for n in ("Fail", "InvalidProtobuf", "NoSuchFile", "InvalidArgument",
                                               "InvalidGraph", "NotImplemented") if hasattr(state, n))
    try:
        session = ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
    except errors as exc:
        raise CheckpointError(f"{p}: not a loadable ONNX model ({exc}); re-export it") from exc
    check_inputs(p, session.get_inputs(), inputs)
    return session


def _width(session: Any, name: str, path: Path) -> int:
    outs = {o.name: o for o in session.get_outputs()}
    if name not in outs:
        raise CheckpointError(f"{path}: the graph has no output '{name}'; outputs: {', '.join(outs)}")
    last = outs[name].shape[-1] if outs[name].shape else None
    if not isinstance(last, int) or len(outs[name].shape) != 2:
        raise CheckpointError(f"{path}: output '{name}' must be [batch, D] with a fixed D, got "
                              f"{list(outs[name].shape)}")
    return last


class OnnxTeacher(nn.Module):
    """A whole teacher exported to ONNX: raw records → its preprocessing → session → logits, features.

    Args:
        path: the ``.onnx`` file.
        preprocessing: the teacher's own preprocessing (what the graph was trained on).
        inputs: the graph inputs and what feeds them; default: the mmdistill export contract over
            ``preprocessing.modalities`` with its sizes (:func:`mmdistill_inputs`).
        logits: name of the logits output ``[B, K]``.
        features: feature name → output name (each ``[B, D]``), e.g. ``{"fused": "embedding"}``.
        threads: ONNX Runtime intra-op threads (None = its default).
    """

    def __init__(self, path: str | Path, preprocessing: PreprocessSpec, *,
                 inputs: Sequence[InputSpec] | None = None, logits: str = "logits",
                 features: Mapping[str, str] | None = None, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.modalities = preprocessing.modalities
        if not self.modalities:
            raise ConfigError("teacher.preprocessing: an ONNX teacher needs the settings of the modalities "
                              "it reads")
        self.inputs = list(inputs) if inputs is not None else mmdistill_inputs(preprocessing)
        self.session = open_session(self.path, self.inputs, threads=threads)
        self.outputs = {"logits": logits, **dict(features or {})}
        self._dims = {k: _width(self.session, v, self.path) for k, v in self.outputs.items()}
        self._pre = preprocessing.preprocessor()
        self._settings = {"inputs": [vars(i) for i in self.inputs], "outputs": self.outputs,
                          "preprocessing": preprocessing.describe()}
        self._fingerprint: str | None = None

    @property
    def num_classes(self) -> int:
        return self._dims["logits"]

    def feature_dims(self) -> dict[str, int]:
        return {k: d for k, d in self._dims.items() if k != "logits"}

    def fingerprint(self) -> str:
        """The graph file plus inputs, outputs and preprocessing (hashed once)."""
        if self._fingerprint is None:
            self._fingerprint = combine(files_fingerprint([self.path]),
                                        settings_fingerprint("onnx-teacher", self._settings))
        return self._fingerprint

    def forward_raw(self, records: RawBatch) -> ModelOutput:
        """Run the graph on ``records``; inputs the chunk lacks are fed zeros (``*_present`` False)."""
        from mmdistill.export.flat import batch_to_flat, filler_array

        flat = batch_to_flat(collate(self._pre.process_all(list(records), progress=False)))
        feeds = {}
        for spec in self.inputs:
            x = flat.get(spec.feed)
            feeds[spec.name] = (x.numpy().astype(NP_TYPES[spec.dtype], copy=False) if x is not None
                                else filler_array(spec.shape, len(records), NP_TYPES[spec.dtype]))
        names = list(self.outputs)
        values = self.session.run([self.outputs[n] for n in names], feeds)
        out = {n: torch.from_numpy(np.asarray(v, dtype=np.float32))
               for n, v in zip(names, values, strict=True)}
        return ModelOutput(logits=out.pop("logits"), features=out)

    def forward(self, records: RawBatch) -> ModelOutput:
        reject_batch(records, "onnx")
        return self.forward_raw(records)
