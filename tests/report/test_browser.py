"""report.html (and a comparison page) in a real browser: headless Chromium through playwright.

Debian's chromium (``/usr/bin/chromium``, installed by ``scripts/ensure_chromium.sh`` from ``make test``)
is launched through ``executable_path``: playwright never downloads a browser of its own. The test
is skipped, with the reason, only where the binary or the playwright package is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from mmdistill.report import compare_runs, load_results

pytestmark = pytest.mark.slow

SKIP_CHROMIUM = "chromium not installed: run scripts/ensure_chromium.sh (apt-get install chromium)"
SKIP_PLAYWRIGHT = "playwright not installed: pip install -c requirements/constraints.txt -e '.[dev]'"


def _chromium() -> str:
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).is_file():
        pytest.skip(SKIP_CHROMIUM)
    return exe


def _render(url: str, screenshot: Path) -> dict[str, Any]:
    """Load ``url``, record every request, console error and page error, and take a full-page shot."""
    pytest.importorskip("playwright", reason=SKIP_PLAYWRIGHT)
    from playwright.sync_api import Route, sync_playwright

    exe = _chromium()
    seen: dict[str, Any] = {"requests": [], "errors": [], "blocked": []}

    def route(r: Route) -> None:
        if r.request.url == url:
            r.continue_()
        else:  # anything but the page itself is a fetch the report must not make
            seen["blocked"].append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            # data: URIs (the inline plots) are decoded in the page, not fetched: only real requests count
            page.on("request",
                    lambda r: None if r.url.startswith("data:") else seen["requests"].append(r.url))
            page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.route("**/*", route)
            response = page.goto(url, wait_until="load")
            seen["ok"] = response is not None and response.ok
            seen["title"] = page.title()
            seen["images"] = page.evaluate(
                "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
            seen["tables"] = page.evaluate(
                "Array.from(document.querySelectorAll('table')).map(t => [t.dataset.table, "
                "t.querySelectorAll('tbody tr').length, t.querySelectorAll('tbody td').length, "
                "Array.from(t.querySelectorAll('tbody td')).every(td => td.textContent.trim() !== '')])")
            warn = page.locator("p.warn")
            seen["warn_visible"] = warn.count() == 0 or warn.first.is_visible()
            if page.locator("details > summary").count():
                page.locator("details > summary").first.click()
                seen["config_visible"] = page.locator("details pre").first.is_visible()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen


def _check_screenshot(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    with Image.open(path) as im:
        assert im.width == 1280 and im.height > 900  # full page: longer than the viewport
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # not a blank page


def test_report_renders_in_headless_chromium(smoke_report: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    res = load_results(smoke_report["results"])
    url = smoke_report["html"].resolve().as_uri()
    shot = tmp_path / "report.png"
    seen = _render(url, shot)
    assert seen["ok"] and seen["title"] == "mmdistill report: smoke"
    assert seen["errors"] == [] and seen["blocked"] == []
    assert seen["requests"] == [url]
    expected_plots = 2 + len(res["curves"])  # two Pareto plots, one training plot per stage
    assert len(seen["images"]) == expected_plots
    assert all(done and w > 300 and h > 200 for done, w, h in seen["images"])
    tables = {key: (rows, cells, filled) for key, rows, cells, filled in seen["tables"]}
    assert tables["summary"][0] == len(res["models"])
    for key in ("summary", "frontier-latency", "frontier-size", "modality-subsets", "drop-one", "stages",
                "export", "machine", "packages"):
        rows, cells, filled = tables[key]
        assert rows > 0 and cells > rows and filled, key
    assert sum(k.startswith("confusion-") for k in tables) == 3
    assert seen["warn_visible"] and seen["config_visible"]
    _check_screenshot(shot)


def test_comparison_page_renders_in_headless_chromium(smoke_run: Path, smoke_report: dict[str, Path],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    paths = compare_runs([smoke_run, smoke_run], tmp_path / "compare.html")
    url = paths["html"].resolve().as_uri()
    seen = _render(url, tmp_path / "compare.png")
    assert seen["ok"] and seen["errors"] == [] and seen["blocked"] == [] and seen["requests"] == [url]
    assert len(seen["images"]) == 2 and all(w > 300 for _, w, _ in seen["images"])
    rows = {key: n for key, n, _, _ in seen["tables"]}
    assert rows["compare"] == 2 * len(load_results(smoke_report["results"])["models"])
    _check_screenshot(tmp_path / "compare.png")
