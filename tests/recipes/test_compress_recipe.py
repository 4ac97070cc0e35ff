"""Tests for the compress stage (mmdistill.recipes.compress) on one tiny smoke run shared by the module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mmdistill.config import load_config
from mmdistill.data.collate import collate
from mmdistill.models.checkpoint import count_parameters, read_model_json
from mmdistill.recipes.compress import compressed_from
from mmdistill.recipes.pipeline import run_pipeline
from mmdistill.recipes.train import load_trained

BRANCHES = ["image", "text", "audio", "fusion", "head"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Teacher + scratch student + every compression of the scratch student, at the smallest sizes."""
    out = tmp_path_factory.mktemp("compress")
    cfg = load_config("smoke", [
        f"output_dir='{out}'", "name=c", "logging.quiet=true", "data.limit=64",
        "stages=[teacher, student, compress]", "teacher.train.epochs=1", "student.train.epochs=1",
        "compress.source=scratch", "compress.prune.recover.epochs=1", "compress.prune.round_to=2",
        "compress.sweep.bits=[4, 8]",
        "compress.sparsity.enabled=true", "compress.qat.enabled=true", "compress.qat.bits=4",
        "compress.qat.recover.epochs=1",
    ])
    run_pipeline(cfg, out / "c")
    return out / "c"


def _summary(run: Path) -> dict:
    return json.loads((run / "compress" / "summary.json").read_text())


def _example(run: Path) -> dict:
    """Two rows with every modality (values do not matter: only shapes and finiteness are checked)."""
    spec = read_model_json(run / "students" / "scratch")["spec"]
    n_mels = spec["encoders"]["audio"]["kwargs"].get("n_mels", 64)
    row = {"image": torch.rand(1, 28, 28), "text": torch.randint(1, 20, (6,)),
           "audio": torch.randn(n_mels, 40), "label": 0, "id": "x"}
    return collate([row, dict(row, id="y")])


def test_summary_names_the_source_and_every_variant(run: Path) -> None:
    s = _summary(run)
    assert s["source"] == "scratch" and 0.0 <= s["source_val_accuracy"] <= 1.0
    assert list(s["variants"]) == ["scratch-pruned", "scratch-sparse", "scratch-qat4"]
    assert s["bit_sweep"] == "compress/bit_sweep.json"
    for name in s["variants"]:
        assert compressed_from(run / "students" / name) == "scratch"
    assert compressed_from(run / "students" / "scratch") is None


def test_pruned_student_has_fewer_parameters_and_reloads(run: Path) -> None:
    info = _summary(run)["variants"]["scratch-pruned"]["pruning"]
    source = load_trained(run / "students" / "scratch").model
    pruned = load_trained(run / "students" / "scratch-pruned").model.eval()
    assert count_parameters(pruned) == info["params_after"] < info["params_before"]
    assert info["params_before"] == count_parameters(source)
    # the pruned widths live in model.json, so the reload needed no pickle and no torch-pruning
    spec = read_model_json(run / "students" / "scratch-pruned")["spec"]
    before, after = info["channels"]["fusion"]["fusion.kwargs.dim"]
    assert spec["fusion"]["kwargs"]["dim"] == after < before
    # compress.prune.round_to reaches the pruner: every kept width is a multiple of 2
    assert info["round_to"] == 2
    assert all(kept % 2 == 0 for per in info["channels"].values() for _, kept in per.values())
    logits = pruned(_example(run)).logits
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    # recovery fine-tuning went through the distill recipe and logged under the variant's stage
    stages = {json.loads(line).get("stage") for line in (run / "metrics.jsonl").read_text().splitlines()}
    assert {"student-scratch-pruned", "student-scratch-qat4"} <= stages


def test_bit_sweep_has_every_branch_and_all_for_val_and_test(run: Path) -> None:
    doc = json.loads((run / "compress" / "bit_sweep.json").read_text())
    assert doc["source"] == "scratch"
    for split in ("val", "test"):
        rows = [r for r in doc["rows"] if r["split"] == split]
        pairs = {(r["branch"], r["bits"]) for r in rows}
        assert pairs == {("none", 32)} | {(b, w) for b in [*BRANCHES, "all"] for w in (4, 8)}
        by = {(r["branch"], r["bits"]): r for r in rows}
        assert by["all", 4]["size_bytes"] < by["all", 8]["size_bytes"] < by["none", 32]["size_bytes"]
        for r in rows:
            assert r["drop"] == pytest.approx(r["fp32_accuracy"] - r["accuracy"])
    # the fp32 row of the validation sweep is the same model on the same batches as the summary's
    val_fp32 = next(r for r in doc["rows"] if r["split"] == "val" and r["branch"] == "none")
    assert val_fp32["accuracy"] == pytest.approx(_summary(run)["source_val_accuracy"])


def test_sparse_student_reports_the_sparsity_measured_in_its_checkpoint(run: Path) -> None:
    rep = _summary(run)["variants"]["scratch-sparse"]["sparsity"]
    assert rep["target"] == 0.5 and rep["scope"] == "global" and rep["speedup"] is None
    state = load_trained(run / "students" / "scratch-sparse").model.state_dict()
    zeros = sum(int((state[n] == 0).sum()) for n in rep["tensors"])
    total = sum(state[n].numel() for n in rep["tensors"])
    assert total == rep["pruned_elements"]  # the elements considered, not only those zeroed
    assert zeros / total == pytest.approx(rep["overall"], abs=1e-6) and rep["overall"] >= 0.5 - 1 / total
    for name, frac in rep["tensors"].items():
        assert float((state[name] == 0).float().mean()) == pytest.approx(frac, abs=1e-6)


def test_qat_student_is_saved_on_a_4_bit_grid(run: Path) -> None:
    variant = _summary(run)["variants"]["scratch-qat4"]
    assert variant["qat"]["default"] == 4 and 0.0 <= variant["val_accuracy"] <= 1.0

    def distinct_per_channel(model: nn.Module) -> dict[str, int]:
        out = {}
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
                w = m.weight.detach().flatten(1)
                out[name] = max(len(torch.unique(row)) for row in w)
        return out

    qat = distinct_per_channel(load_trained(run / "students" / "scratch-qat4").model)
    fp32 = distinct_per_channel(load_trained(run / "students" / "scratch").model)
    assert qat and all(n <= 16 for n in qat.values()), qat  # 2**4 levels per output channel
    assert max(fp32.values()) > 16  # the fp32 source is not on such a grid: the check has teeth


def test_recovery_with_mixup_runs_the_teacher_online(run: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """``compress.prune.recover.mixup`` fine-tunes by function matching: no cache, teacher online."""
    import logging
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(run, copy)
    cfg = load_config("smoke", [
        f"output_dir='{tmp_path}'", "name=c", "logging.quiet=true", "data.limit=64", "stages=[compress]",
        "compress.source=scratch", "compress.prune.recover.epochs=1", "compress.prune.recover.mixup=0.5",
        "compress.sweep.enabled=false",
    ])
    with caplog.at_level(logging.INFO, logger="mmdistill"):
        run_pipeline(cfg, copy)
    text = caplog.text
    assert "teacher runs online: mixup 0.5" in text and "mixup=0.5" in text
    assert load_trained(copy / "students" / "scratch-pruned").model is not None
