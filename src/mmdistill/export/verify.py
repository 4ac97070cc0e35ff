"""Check an exported ONNX file against its eager model (or reference logits) on real batches.

Every export is verified (timm ``onnx_export``, torchao SQNR checks): the maximum absolute logit
error and the top-1 agreement between PyTorch eager and ONNX Runtime over held-out batches,
including rows with a modality missing, must meet thresholds, or :class:`VerificationError` says
which file, what was measured, the threshold and what to try.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmdistill.data.batch import IGNORE_LABEL, Batch
from mmdistill.errors import MissingDependencyError, MMDistillError
from mmdistill.export.onnx import OUTPUT_NAME, ExportError, onnx_feeds
from mmdistill.models.multimodal import MultimodalModel


class VerificationError(MMDistillError):
    """An exported model does not reproduce its reference closely enough."""


@dataclass
class VerifyReport:
    """What :func:`verify_onnx` / :func:`runtime_accuracy` measured.

    Attributes:
        path: the ONNX file.
        rows: number of rows compared.
        max_abs_error: max ``|logits_ref - logits_ort|`` over all rows and classes (None without a
            reference).
        agreement: share of rows whose top-1 class equals the reference's (None without one).
        accuracy_reference: accuracy of the reference (eager) logits on labelled rows, or None.
        accuracy_onnx: accuracy of the ONNX Runtime logits on labelled rows, or None.
        labelled: rows with a label (``label != IGNORE_LABEL``).
        logits: the runtime's logits ``[rows, K]`` in batch order (not serialized by :meth:`to_dict`).
        atol: the error threshold applied (None when not checked).
        min_agreement: the agreement threshold applied (None when not checked).
    """

    path: str
    rows: int
    max_abs_error: float | None
    agreement: float | None
    accuracy_reference: float | None
    accuracy_onnx: float | None
    labelled: int
    atol: float | None = None
    min_agreement: float | None = None
    logits: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (for ``export/verify.json``); the runtime's logits are left out."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "logits"}


def make_session(onnx_path: str | Path, *, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session for ``onnx_path`` with ``threads`` intra-op threads.

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        ExportError: the file is missing or ONNX Runtime cannot load it.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "onnx", "running ONNX models") from exc
    path = Path(onnx_path)
    if not path.is_file():
        raise ExportError(f"{path}: ONNX file not found; export it first (export_onnx or the export stage)")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own untyped Fail/InvalidGraph exceptions
        raise ExportError(
            f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "re-export the model, or check that onnxruntime supports its opset"
        ) from exc


def session_input_shapes(session: Any) -> dict[str, list[int | str]]:
    """Input name → shape (axis names for dynamic axes) of an ONNX Runtime session."""
    return {i.name: [d if isinstance(d, int) else str(d) for d in i.shape] for i in session.get_inputs()}


def run_session(session: Any, batch: Batch) -> np.ndarray:
    """Logits ``[B, K]`` of an ONNX Runtime session built from an mmdistill export for ``batch``."""
    names = [i.name for i in session.get_inputs()]
    feeds = onnx_feeds(batch, names, session_input_shapes(session))
    outputs = [o.name for o in session.get_outputs()]
    want = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
    return np.asarray(session.run([want], feeds)[0], dtype=np.float32)


def _labels(batch: Batch) -> np.ndarray | None:
    label = batch.get("label")
    return None if not isinstance(label, torch.Tensor) else label.detach().cpu().numpy().astype(np.int64)


def _report(
    path: Path,
    ort_logits: list[np.ndarray],
    ref_logits: list[np.ndarray] | None,
    labels: list[np.ndarray | None],
) -> VerifyReport:
    got = np.concatenate(ort_logits, axis=0)
    rows = int(got.shape[0])
    have = [lab is not None for lab in labels]
    lab = np.concatenate([lb for lb in labels if lb is not None]) if all(have) and labels else None
    mask = None if lab is None else lab != IGNORE_LABEL
    labelled = 0 if mask is None else int(mask.sum())

    def accuracy(logits: np.ndarray) -> float | None:
        if mask is None or labelled == 0:
            return None
        return float((logits.argmax(axis=1)[mask] == lab[mask]).mean())

    err = agree = acc_ref = None
    if ref_logits is not None:
        ref = np.concatenate(ref_logits, axis=0)
        if ref.shape != got.shape:
            raise VerificationError(
                f"{path}: reference logits have shape {list(ref.shape)} but ONNX Runtime gave "
                f"{list(got.shape)}; pass one reference array per batch, in the same order"
            )
        err = float(np.abs(ref - got).max()) if rows else 0.0
        agree = float((ref.argmax(axis=1) == got.argmax(axis=1)).mean()) if rows else 1.0
        acc_ref = accuracy(ref)
    return VerifyReport(path=str(path), rows=rows, max_abs_error=err, agreement=agree,
                        accuracy_reference=acc_ref, accuracy_onnx=accuracy(got), labelled=labelled,
                        logits=got)


def _check_agreement(report: VerifyReport, min_agreement: float, what: str) -> None:
    assert report.agreement is not None
    if report.agreement < min_agreement:
        raise VerificationError(
            f"{report.path}: top-1 agreement with {what} is {report.agreement:.4f} over {report.rows} rows, "
            f"below the threshold {min_agreement:g}; re-export (check the model was in eval mode), keep "
            "sensitive branches in fp32 (export.quantize.keep_fp32) or lower export.verify.min_agreement"
        )


def verify_onnx(
    model: MultimodalModel,
    onnx_path: str | Path,
    batches: Iterable[Batch],
    *,
    atol: float = 1e-4,
    min_agreement: float = 0.99,
    threads: int = 1,
    reference_logits: Sequence[torch.Tensor] | None = None,
) -> VerifyReport:
    """Compare eager ``model`` and ONNX Runtime on ``batches``; raise unless both thresholds hold.

    Args:
        model: the eager model the file was exported from (run in eval mode, mode restored).
        onnx_path: the exported file.
        batches: collated batches; rows or whole modalities may be absent (``present`` False).
        atol: maximum allowed absolute logit error.
        min_agreement: minimum share of rows with the same top-1 class.
        threads: ONNX Runtime intra-op threads.
        reference_logits: ``model``'s logits per batch when the caller already has them (they are
            then not recomputed); None runs ``model`` here.

    Returns:
        the measurements (also when they pass).

    Raises:
        VerificationError: no rows, or the error or agreement misses its threshold.
    """
    path = Path(onnx_path)
    session = make_session(path, threads=threads)
    was_training = model.training
    model.eval()
    got: list[np.ndarray] = []
    ref: list[np.ndarray] = []
    labels: list[np.ndarray | None] = []
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                logits = model(batch).logits if reference_logits is None else reference_logits[i]
                ref.append(logits.detach().float().cpu().numpy())
                got.append(run_session(session, batch))
                labels.append(_labels(batch))
    finally:
        model.train(was_training)
    if not got:
        raise VerificationError(f"{path}: no batches to verify on; pass at least one held-out batch")
    report = _report(path, got, ref, labels)
    report.atol, report.min_agreement = float(atol), float(min_agreement)
    assert report.max_abs_error is not None
    if not report.max_abs_error <= atol:  # written so that NaN fails too
        raise VerificationError(
            f"{path}: max |eager - ONNX Runtime| logit error is {report.max_abs_error:.3g} over "
            f"{report.rows} rows, above atol {atol:g}; re-export with another opset (export.opset), "
            "check for train-mode layers or data-dependent branches, or raise export.verify.atol"
        )
    _check_agreement(report, min_agreement, "the eager model")
    return report


def runtime_accuracy(
    onnx_path: str | Path,
    batches: Sequence[Batch],
    *,
    reference_logits: Sequence[np.ndarray | torch.Tensor] | None = None,
    min_agreement: float | None = None,
    threads: int = 1,
) -> VerifyReport:
    """Accuracy of an ONNX file with no eager twin (e.g. int8), and agreement with reference logits.

    Args:
        onnx_path: the ONNX file (quantized or not).
        batches: collated batches.
        reference_logits: optional ``[B, K]`` logits per batch (e.g. of the fp32 model), same order.
        min_agreement: if given (with ``reference_logits``), raise below this top-1 agreement.
        threads: ONNX Runtime intra-op threads.

    Raises:
        VerificationError: no rows, a reference of the wrong shape, or agreement below the threshold.
    """
    path = Path(onnx_path)
    session = make_session(path, threads=threads)
    got = [run_session(session, b) for b in batches]
    if not got:
        raise VerificationError(f"{path}: no batches to measure on; pass at least one held-out batch")
    ref = None
    if reference_logits is not None:
        if len(reference_logits) != len(got):
            raise VerificationError(
                f"{path}: {len(reference_logits)} reference logit arrays for {len(got)} batches; "
                "pass one per batch"
            )
        ref = [r.detach().float().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r, np.float32)
               for r in reference_logits]
    report = _report(path, got, ref, [_labels(b) for b in batches])
    if min_agreement is not None:
        if ref is None:
            raise ValueError("min_agreement needs reference_logits to compare against")
        report.min_agreement = float(min_agreement)
        _check_agreement(report, min_agreement, "the reference logits")
    return report


def runtime_subset_accuracy(
    onnx_path: str | Path,
    batches: Sequence[Batch],
    modalities: Sequence[str],
    *,
    full_accuracy: float | None = None,
    threads: int = 1,
) -> dict[str, float]:
    """Accuracy through ONNX Runtime for every non-empty subset of ``modalities`` (``"image+audio"``).

    The other modalities are hidden from each batch as in the eager evaluation
    (:func:`mmdistill.evaluation.robustness.subset_accuracy`), so eager and exported rows of the
    report compare like for like; an exported graph takes absent modalities through its presence
    inputs.

    Args:
        onnx_path: the exported file (fp32 or quantized).
        batches: labelled, collated batches.
        modalities: the model's modalities.
        full_accuracy: the accuracy with every modality, when already measured (that pass is skipped).
        threads: ONNX Runtime intra-op threads.
    """
    from mmdistill.data.batch import drop_modalities
    from mmdistill.evaluation.metrics import accuracy
    from mmdistill.evaluation.robustness import modality_subsets

    session = make_session(Path(onnx_path), threads=threads)
    labels = np.concatenate([lab for b in batches if (lab := _labels(b)) is not None])
    out: dict[str, float] = {}
    for subset in modality_subsets(modalities):
        key = "+".join(subset)
        if full_accuracy is not None and len(subset) == len(modalities):
            out[key] = full_accuracy
            continue
        hidden = [m for m in modalities if m not in subset]
        logits = np.concatenate([run_session(session, drop_modalities(b, hidden)) for b in batches])
        out[key] = accuracy(logits, labels)
    return out

