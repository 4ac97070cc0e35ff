"""report.html and report.md from hand-built run folders: content, escaping, self-containment."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mmdistill.errors import MissingDependencyError
from mmdistill.report import write_report

HOSTILE = "<script>alert(1)</script>"


def _h3(text: str) -> list[str]:
    return re.findall(r"<h3 id=\"[^\"]*\">([^<]*)</h3>", text)


def test_report_shows_tables_flags_ship_and_heat_maps(make_run: Callable[..., Path]) -> None:
    paths = write_report(make_run())
    assert set(paths) == {"results", "markdown", "html"} and all(p.is_file() for p in paths.values())
    page = paths["html"].read_text()
    summary = page.split('data-table="summary"')[1].split("</table>")[0]
    assert summary.count("<tr>") == 1 + 6  # header + one row per model
    assert "NOT FASTER than student-kd.onnx (b1 1.50x its latency)" in page
    assert "Ship student-kd.onnx (test accuracy 80.00%): fastest at batch 1." in page
    subsets = page.split('data-table="modality-subsets"')[1].split("</table>")[0]
    assert subsets.count('style="background:#') >= 9  # 3 multimodal models x 3 subsets, +1 baseline
    assert ">n/a<" in subsets  # the image baseline has no text
    titles = _h3(page)
    for name in ("teacher (teacher)", "student-scratch (scratch student)", "student-kd (shipped student"):
        assert any(name in t for t in titles), name
    assert "Feature alignment with the teacher" in titles
    assert page.count('<img src="data:image/png;base64,') == 2 + 2  # two Pareto plots, two stages' curves
    assert "<details><summary>show</summary><pre>" in page  # the resolved config


def test_markdown_carries_the_same_tables(make_run: Callable[..., Path]) -> None:
    paths = write_report(make_run())
    titles = [t.replace("&#x27;", "'") for t in _h3(paths["html"].read_text())]
    md = paths["markdown"].read_text()
    assert re.findall(r"^### (.*)$", md, flags=re.M) == titles
    assert "| student-kd.int8 |" in md and "**NOT FASTER than student-kd.onnx" in md
    assert "**SHIP**" in md


def test_hostile_names_and_config_values_are_escaped(make_run: Callable[..., Path]) -> None:
    name = f"student-{HOSTILE}$a_b$c"  # `$` would switch matplotlib labels to math mode
    paths = write_report(make_run(student=name, config_extra={"comment": HOSTILE}))
    page, md = paths["html"].read_text(), paths["markdown"].read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;$a_b$c" in page
    # Markdown: escaped everywhere but inside the config's fenced code block, where text is inert
    prose, fenced = re.split(r"^```yaml$", md, flags=re.M)
    assert "<script" not in prose.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in prose
    assert f"comment: {HOSTILE}" in fenced.split("```")[0]
    assert page.count("&lt;script&gt;") >= 5  # the summary, the flags, the tables and the config


def test_the_page_can_fetch_nothing(make_run: Callable[..., Path]) -> None:
    page = write_report(make_run())["html"].read_text()
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page)
    assert links and all(u.startswith(("data:", "#")) for u in links), [u[:40] for u in links]
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "url(" not in page and "@import" not in page and "<script" not in page


def test_without_matplotlib_results_and_markdown_are_still_written(
    make_run: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = make_run()
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmdistill\[report\]'"):
        write_report(run)
    assert (run / "results.json").is_file() and (run / "report.md").is_file()
    assert not (run / "report.html").exists()


def test_a_run_without_export_or_curves_still_renders(make_run: Callable[..., Path]) -> None:
    run = make_run(export=False)
    (run / "metrics.jsonl").unlink()
    kd = json.loads((run / "eval" / "student-kd.json").read_text())
    del kd["latency"]
    (run / "eval" / "student-kd.json").write_text(json.dumps(kd))
    page = write_report(run)["html"].read_text()
    assert "No ship decision: the export stage did not run" in page
    assert "No plot for test accuracy vs batch-1 latency" in page  # no model was timed
    assert page.count("<img ") == 1  # accuracy vs size still has every model
    training = page.split('<section id="training">')[1].split("</section>")[0]
    assert "Nothing measured for this section in this run." in training


def test_log_latency_axis_has_plain_non_overlapping_labels() -> None:
    """Costs over 0.13-4 ms (under two decades) get a log axis labelled 0.2, 0.5, 1, 2 and no
    minor-tick labels (matplotlib's default 2x10^-1 ... labels overlapped)."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from mmdistill.report import plots

    fig, ax = plt.subplots()
    ax.scatter([0.13, 0.2, 0.9, 4.0], [90, 92, 95, 97])
    plots._log_x(ax)
    ax.set_xlim(0.1, 5.0)
    fig.canvas.draw()
    major = [t.get_text() for t in ax.get_xticklabels() if 0.1 <= t.get_position()[0] <= 5.0]
    minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    plt.close(fig)
    assert ax.get_xscale() == "log"
    assert major == ["0.1", "0.2", "0.5", "1", "2", "5"] and minor == []
