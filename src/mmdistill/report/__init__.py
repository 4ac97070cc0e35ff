"""The run report: ``results.json`` (machine-readable), ``report.html`` (one self-contained page) and
``report.md``, built from a run folder alone; and side-by-side comparisons of several runs.

Nothing heavy is imported here: matplotlib loads only when a plot is drawn, torch never.

Example::

    from mmdistill.report import write_report
    paths = write_report("runs/demo")   # {"results": ..., "markdown": ..., "html": ...}
"""

from __future__ import annotations

from mmdistill.report.compare import compare_runs
from mmdistill.report.results import SCHEMA, SCHEMA_VERSION, build_results, load_results, write_results
from mmdistill.report.write import write_report

__all__ = ["SCHEMA", "SCHEMA_VERSION", "build_results", "compare_runs", "load_results", "write_report",
           "write_results"]
