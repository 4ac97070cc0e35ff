"""The report of a real run (the smoke pipeline with every stage): results.json, report.html, compare."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mmdistill.report import SCHEMA, compare_runs, load_results

pytestmark = pytest.mark.slow


def test_results_json_describes_every_model_of_the_run(smoke_run: Path,
                                                       smoke_report: dict[str, Path]) -> None:
    res = load_results(smoke_report["results"])
    assert res["schema"] == SCHEMA and res["config"]["name"] == "smoke"
    summary = json.loads((smoke_run / "eval" / "summary.json").read_text())
    models = {m["name"]: m for m in res["models"]}
    assert list(models) == [r["model"] for r in summary]
    kinds = {n: m["kind"] for n, m in models.items()}
    assert kinds["teacher"] == "teacher" and kinds["baseline-audio"] == "baseline"
    assert kinds["student-scratch"] == kinds["student-kd"] == "student"
    assert kinds["student-kd-pruned"] == "compressed"
    assert models["student-kd-pruned"]["parent"] == "student-kd"
    exported = [n for n, k in kinds.items() if k == "exported"]
    assert sorted(exported) == ["student-kd-pruned.int8", "student-kd-pruned.onnx", "student-kd.int8",
                                "student-kd.onnx"]
    assert all(models[n]["runtime"] == "onnxruntime" and models[n]["parent"] in models for n in exported)
    shipped = [n for n, m in models.items() if m["ship"]]
    assert shipped == [res["ship"]["name"]] and res["ship"]["reason"]
    teacher = models["teacher"]
    assert len(teacher["modality_subsets"]) == 2 ** 3 - 1
    assert set(teacher["drop_one_loss"]) == {"image", "text", "audio"}
    assert len(teacher["confusion_matrix"]) == 10 and teacher["class_names"][3] == "three"
    for name in exported:  # measured through ONNX Runtime by the export stage
        m = models[name]
        assert len(m["modality_subsets"]) == 7 and len(m["confusion_matrix"]) == 10
        assert m["macro_f1"] is not None and m["ece"] is not None and m["macs"] > 0
        assert 0.0 <= m["teacher_agreement"] <= 1.0
    for name in ("student-kd", "student-kd.onnx"):
        lat = models[name]["latency"]
        assert lat["b1"]["median_ms"] > 0 and lat["b1"]["p95_ms"] >= lat["b1"]["median_ms"]
        assert lat["b1"]["threads"] == 1 and lat["source"] == "subprocess"
    assert models["student-scratch"]["latency"]["source"] == "in-process"  # not exported: eval's timing
    assert {"teacher", "student-scratch", "student-kd"} <= set(res["curves"])
    assert "train/loss/kd_ce" in res["curves"]["student-kd"]
    assert res["compress"]["summary"]["source"] == "kd" and res["compress"]["bit_sweep"]["rows"]
    assert res["packages"]["torch"] and res["machine"]["cpu_count"] >= 1 and res["world_size"] == 1


def test_report_html_has_every_section_plot_and_flag(smoke_report: dict[str, Path]) -> None:
    res = load_results(smoke_report["results"])
    page = smoke_report["html"].read_text()
    md = smoke_report["markdown"].read_text()
    for key in ("decision", "summary", "pareto", "robustness", "training", "confusion", "compression",
                "export", "config", "environment"):
        assert f'<section id="{key}">' in page, key
    assert page.count('<img src="data:image/png;base64,') == 2 + len(res["curves"])
    summary = page.split('data-table="summary"')[1].split("</table>")[0]
    assert summary.count("<tr>") == 1 + len(res["models"])
    assert len(re.findall(r"<h3[^>]*>Confusion matrix: ", page)) == 3  # teacher, scratch, shipped student
    for m in res["models"]:
        for parent in m.get("not_faster_than") or []:
            assert f"{m['name']} is NOT FASTER than {parent}" in page
            assert f"NOT FASTER than {parent}" in md
    assert f"Ship {res['ship']['name']}" in page and f"**Ship {res['ship']['name']}" in md
    if any(m.get("alignment") for m in res["models"]):  # the evaluate stage adds it (optional key)
        assert "Feature alignment with the teacher" in page


def test_compare_puts_two_runs_side_by_side(smoke_run: Path, smoke_report: dict[str, Path],
                                            tmp_path: Path) -> None:
    other = tmp_path / "other"
    derived = {"results.json", "report.html", "report.md"}  # the run folder's own, not export/results.json
    shutil.copytree(smoke_run, other,
                    ignore=lambda d, names: derived & set(names) if d == str(smoke_run) else set())
    assert not (other / "results.json").exists() and (other / "export" / "results.json").is_file()
    config = other / "config.resolved.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 7"))
    paths = compare_runs([smoke_run, other], tmp_path / "out" / "compare.html")
    assert (other / "results.json").is_file()  # built first, since it was missing
    page, md = paths["html"].read_text(), paths["markdown"].read_text()
    n = len(load_results(smoke_report["results"])["models"])
    table = page.split('data-table="compare"')[1].split("</table>")[0]
    assert table.count('<tr><td class="l">smoke</td>') == n
    assert table.count('<tr><td class="l">other</td>') == n
    assert page.count('<img src="data:image/png;base64,') == 2
    diff = page.split('data-table="config-diff"')[1].split("</table>")[0]
    assert "<td class=\"l\">seed</td><td>0</td><td>7</td>" in diff
    assert md.count("| other | student-") == md.count("| smoke | student-") > 4
    assert "### Configuration differences" in md and "| seed | 0 | 7 |" in md
    runs = page.split('data-table="runs"')[1]
    assert runs.count(load_results(smoke_report["results"])["ship"]["name"]) == 2  # both runs ship it
