"""verify_onnx / runtime_accuracy: measured numbers against hand-computed ones, and loud failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mmdistill.data.batch import IGNORE_LABEL, drop_modalities
from mmdistill.export.onnx import ExportError, export_onnx
from mmdistill.export.verify import VerificationError, make_session, runtime_accuracy, verify_onnx
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.multimodal import MultimodalModel

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

VOCAB, MELS = 40, 8


def make_batch(rows: int, *, seed: int, steps: int = 6, frames: int = 12) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    text_len = torch.randint(1, steps + 1, (rows,), generator=g)
    audio_len = torch.randint(3, frames + 1, (rows,), generator=g)
    text = torch.randint(1, VOCAB, (rows, steps), generator=g)
    text = text.masked_fill(torch.arange(steps) >= text_len[:, None], 0)
    return {
        "id": [str(i) for i in range(rows)],
        "label": torch.randint(0, 4, (rows,), generator=g),
        "image": torch.randn(rows, 1, 10, 10, generator=g),
        "text": text,
        "audio": torch.randn(rows, MELS, frames, generator=g),
        "lengths": {"text": text_len, "audio": audio_len},
        "present": {m: torch.ones(rows, dtype=torch.bool) for m in ("image", "text", "audio")},
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultimodalModel, Path, list[dict[str, Any]]]:
    torch.manual_seed(0)
    spec = model_spec("tiny", modalities=["image", "text", "audio"], num_classes=4, vocab_size=VOCAB,
                      n_mels=MELS, fusion={"name": "attention"})
    model = build_model(spec).eval()
    path = tmp_path_factory.mktemp("verify") / "m.onnx"
    export_onnx(model, path, make_batch(4, seed=0))
    partial = make_batch(6, seed=2, steps=9, frames=7)
    partial["present"]["audio"] = torch.tensor([True, False, False, True, True, False])
    partial["label"][0] = IGNORE_LABEL  # an unlabelled row: not counted in accuracy
    batches = [make_batch(5, seed=1), partial, drop_modalities(make_batch(3, seed=3), ["image"])]
    return model, path, batches


def _expected_accuracy(model: MultimodalModel, batches: list[dict[str, Any]]) -> tuple[float, int]:
    with torch.no_grad():
        pred = torch.cat([model(b).logits.argmax(1) for b in batches])
    label = torch.cat([b["label"] for b in batches])
    keep = label != IGNORE_LABEL
    return float((pred[keep] == label[keep]).float().mean()), int(keep.sum())


def test_verify_passes_and_reports_hand_checked_numbers(exported) -> None:
    model, path, batches = exported
    model.train()
    report = verify_onnx(model, path, batches, atol=1e-4, min_agreement=0.99)
    assert model.training  # mode restored
    model.eval()
    accuracy, labelled = _expected_accuracy(model, batches)
    assert report.rows == 14 and report.labelled == labelled == 13
    assert report.max_abs_error is not None and report.max_abs_error < 1e-4
    assert report.agreement == 1.0
    assert report.accuracy_reference == pytest.approx(accuracy)
    assert report.accuracy_onnx == pytest.approx(accuracy)
    assert report.to_dict()["atol"] == 1e-4


def test_verify_fails_loudly_on_error_and_on_agreement(exported) -> None:
    model, path, batches = exported
    drifted = build_model(model.spec).eval()
    drifted.load_state_dict(model.state_dict())
    with torch.no_grad():
        drifted.head.fc.bias += 0.01  # the same shift on every logit: top-1 unchanged, error 0.01 > atol
    with pytest.raises(VerificationError, match=r"m\.onnx: max \|eager - ONNX Runtime\| logit error is 0\.01 "
                                                r"over 14 rows, above atol 0\.0001"):
        verify_onnx(drifted, path, batches)
    with torch.no_grad():
        drifted.head.fc.weight.neg_()  # the classifier reversed: top-1 changes on most rows
        drifted.head.fc.bias.neg_()
    low = r"top-1 agreement with the eager model is 0\.\d+ over 14 rows, below the threshold 0\.99"
    with pytest.raises(VerificationError, match=low):
        verify_onnx(drifted, path, batches, atol=1e9)
    with pytest.raises(VerificationError, match="no batches"):
        verify_onnx(model, path, [])


def test_runtime_accuracy_against_reference_logits(exported) -> None:
    model, path, batches = exported
    with torch.no_grad():
        reference = [model(b).logits for b in batches]
    report = runtime_accuracy(path, batches, reference_logits=reference, min_agreement=0.99)
    accuracy, _ = _expected_accuracy(model, batches)
    assert report.agreement == 1.0 and report.max_abs_error < 1e-4
    assert report.accuracy_onnx == pytest.approx(accuracy)
    alone = runtime_accuracy(path, batches)
    assert alone.agreement is None and alone.accuracy_onnx == pytest.approx(accuracy)
    # A reference that ranks the classes the other way round agrees on no row.
    with pytest.raises(VerificationError, match=r"agreement with the reference logits is 0\.0000"):
        runtime_accuracy(path, batches, reference_logits=[-r for r in reference], min_agreement=0.95)
    with pytest.raises(VerificationError, match="2 reference logit arrays for 3 batches"):
        runtime_accuracy(path, batches, reference_logits=reference[:2])


def test_sessions_use_the_requested_threads_and_name_missing_files(exported, tmp_path: Path) -> None:
    _, path, _ = exported
    session = make_session(path, threads=2)
    assert session.get_session_options().intra_op_num_threads == 2
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ExportError, match=r"nope\.onnx: ONNX file not found"):
        make_session(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(ExportError, match=r"junk\.onnx: ONNX Runtime cannot load it"):
        make_session(tmp_path / "junk.onnx")
