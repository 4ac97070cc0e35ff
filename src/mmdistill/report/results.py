"""``results.json``: everything a run measured, built from the run folder alone.

Reads ``config.resolved.yaml``, ``versions.json``, ``eval/*.json``, ``export/results.json``,
``compress/*.json`` and ``metrics.jsonl``; needs no config object, no data and no torch. The schema
(``schema: "mmdistill.results"``, ``schema_version: 1``) is documented key by key in docs/report.md.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from mmdistill import __version__
from mmdistill.errors import CheckpointError, DataError
from mmdistill.report.curves import read_curves
from mmdistill.report.files import atomic_write_text, dump_json, read_json, read_optional_json
from mmdistill.report.models import collect_models

SCHEMA = "mmdistill.results"
SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
CONFIG_FILE = "config.resolved.yaml"


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a path, after checking it is a run folder (holds ``config.resolved.yaml``).

    Raises:
        CheckpointError: the path does not exist, is not a folder, or is not a run folder.
    """
    run = Path(run_dir).expanduser()
    hint = "pass the folder `mmdistill run` wrote (OUTPUT_DIR/NAME, e.g. runs/demo)"
    if not run.exists():
        raise CheckpointError(f"run folder not found, got '{run}'; {hint}")
    if not run.is_dir():
        raise CheckpointError(f"'{run}' is not a directory; {hint}")
    if not (run / CONFIG_FILE).is_file():
        raise CheckpointError(f"'{run}' is not a run folder: it has no {CONFIG_FILE}; {hint}")
    return run


def evaluate_hint(run: Path) -> str:
    """The command that (re)runs the evaluate stage into ``run``."""
    return (f"mmdistill run {run / CONFIG_FILE} 'stages=[evaluate]' --output-dir {run.parent} "
            f"--name {run.name}")


def load_evals(run: Path) -> dict[str, dict[str, Any]]:
    """``eval/<variant>.json`` by variant name (``summary.json`` excluded).

    Raises:
        CheckpointError: ``eval/`` is missing or holds no model result (the evaluate stage never ran).
        DataError: a result file is not valid JSON.
    """
    folder = run / "eval"
    files = sorted(p for p in folder.glob("*.json") if p.name != "summary.json") if folder.is_dir() else []
    if not files:
        raise CheckpointError(f"{folder}: no evaluation results (eval/<model>.json); run the evaluate stage "
                              f"first: {evaluate_hint(run)}")
    out: dict[str, dict[str, Any]] = {}
    for path in files:
        res = read_json(path)
        if not isinstance(res, dict):
            raise DataError("expected a JSON object (one model's results); rerun the evaluate stage: "
                            f"{evaluate_hint(run)}", path=str(path))
        out[str(res.get("name") or path.stem)] = res
    return out


def _load_config(run: Path) -> dict[str, Any]:
    path = run / CONFIG_FILE
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"not valid YAML ({e}); rerun `mmdistill run` to write it again",
                        path=str(path)) from e
    return cfg if isinstance(cfg, dict) else {}


def _load_compress(run: Path) -> dict[str, Any] | None:
    """Every JSON file under ``compress/`` by stem (``summary``, ``bit_sweep``), or None."""
    folder = run / "compress"
    if not folder.is_dir():
        return None
    found = {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))}
    return found or None


def _ship(export: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any] | None:
    ship = (export or {}).get("ship")
    if not ship:
        return None
    rule = {k: (config.get("export") or {}).get(k) for k in ("keep_faster", "max_accuracy_drop")}
    return {**ship, "rule": rule}


def _notes(run: Path, summary: Any, export: Any, compress: Any, curves_skipped: int) -> list[str]:
    notes = []
    if summary is None:
        notes.append("eval/summary.json is missing: the evaluate stage did not finish; the models are "
                     f"listed from eval/*.json alone ({evaluate_hint(run)})")
    if export is None:
        notes.append("no export/results.json: the export stage did not run, so there are no ONNX Runtime "
                     "artifacts, no per-runtime latency and no ship decision (add 'export' to stages)")
    if compress is None:
        notes.append("no compress/ folder: the compress stage did not run (add 'compress' to stages)")
    if not (run / "metrics.jsonl").is_file():
        notes.append("no metrics.jsonl: no training curves (the models were loaded, not trained here)")
    if curves_skipped:
        notes.append(f"metrics.jsonl: {curves_skipped} unreadable line(s) left out of the training curves")
    return notes


def build_results(run_dir: str | Path) -> dict[str, Any]:
    """The machine-readable results of a run, from its folder alone (schema in docs/report.md).

    Args:
        run_dir: a run folder written by ``mmdistill run`` whose evaluate stage has run.

    Returns:
        A JSON-ready dict: ``schema``, ``schema_version``, ``created``, ``run_dir``, ``mmdistill_version``,
        ``config``, ``seed``, ``machine``, ``packages``, ``world_size``, ``models``, ``summary``,
        ``export``, ``compress``, ``curves``, ``step_curves``, ``ship``, ``notes``.

    Raises:
        CheckpointError: not a run folder, or no evaluation results in it.
        DataError: one of its files is not valid JSON or YAML.
    """
    run = check_run_dir(run_dir)
    config = _load_config(run)
    evals = load_evals(run)
    versions = read_optional_json(run / "versions.json") or {}
    summary = read_optional_json(run / "eval" / "summary.json")
    export = read_optional_json(run / "export" / "results.json")
    compress = _load_compress(run)
    curves = read_curves(run / "metrics.jsonl")
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_dir": str(run.resolve()),
        "mmdistill_version": __version__,
        "config": config,
        "seed": versions.get("seed", config.get("seed")),
        "machine": versions.get("machine") or {},
        "packages": versions.get("packages") or {},
        "world_size": versions.get("world_size"),
        "models": collect_models(run, evals, summary, export, compress),
        "summary": summary or [],
        "export": export,
        "compress": compress,
        "curves": curves.epochs,
        "step_curves": curves.steps,
        "ship": _ship(export, config),
        "notes": _notes(run, summary, export, compress, curves.skipped_lines),
    }


def save_results(results: dict[str, Any]) -> Path:
    """Write built ``results`` to ``<results["run_dir"]>/results.json`` atomically; return the path."""
    return atomic_write_text(Path(results["run_dir"]) / RESULTS_FILE, dump_json(results))


def write_results(run_dir: str | Path) -> Path:
    """Build the results (:func:`build_results`) and write them to ``RUN_DIR/results.json`` atomically."""
    return save_results(build_results(run_dir))


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` and check its schema name and version.

    Raises:
        DataError: not JSON, another schema, or a newer schema version than this mmdistill reads.
    """
    res = read_json(Path(path))
    if not isinstance(res, dict) or res.get("schema") != SCHEMA:
        raise DataError(f"not an mmdistill results file (schema is not '{SCHEMA}'); rebuild it with "
                        "`mmdistill report RUN_DIR`", path=str(path))
    version = res.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(f"schema_version {version!r} is newer than this mmdistill reads ({SCHEMA_VERSION}); "
                        "upgrade mmdistill or rebuild it with `mmdistill report RUN_DIR`", path=str(path))
    return res
