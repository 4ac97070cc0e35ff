"""The model tables of the report: summary, Pareto frontiers, missing modalities, contributions,
alignment, tasks and confusion matrices, each built from ``results.json`` as a :class:`Table`."""

from __future__ import annotations

import re
from typing import Any

from mmdistill.report.analysis import pareto_frontier, value_range
from mmdistill.report.table import DASH, Cell, Table, count, finite, num, pct, points, si, size, text

ORDER = ("image", "text", "audio")
PARETO_AXES = {"latency": "batch-1 latency (ms, median)", "size": "size on disk"}


def batch_sizes(models: list[dict[str, Any]]) -> list[int]:
    """Every batch size some model was timed at, ascending."""
    found = {int(k[1:]) for m in models for k in (m.get("latency") or {}) if re.fullmatch(r"b\d+", k)}
    return sorted(found)


def latency_ms(model: dict[str, Any], batch: int, stat: str = "median_ms") -> float | None:
    """``model``'s latency statistic at ``batch`` (``median_ms`` or ``p95_ms``), if measured."""
    entry = (model.get("latency") or {}).get(f"b{batch}") or {}
    value = entry.get(stat)
    return value if finite(value) else None


def pareto_cost(model: dict[str, Any], axis: str) -> float | None:
    """The cost a Pareto plot puts on x: batch-1 median latency (``latency``) or bytes (``size``)."""
    if axis == "latency":
        return latency_ms(model, 1)
    value = model.get("bytes_on_disk")
    return value if finite(value) else None


def frontier(models: list[dict[str, Any]], axis: str) -> list[str]:
    """Names on the accuracy-versus-``axis`` Pareto frontier (see :func:`pareto_frontier`)."""
    return pareto_frontier([(m["name"], pareto_cost(m, axis), m.get("accuracy")) for m in models])


def flags(model: dict[str, Any]) -> list[tuple[str, str]]:
    """``(text, tone)`` flags of a model: ``SHIP`` and ``NOT FASTER than X (b1 1.39x its latency)``."""
    out = []
    if model.get("ship"):
        out.append(("SHIP", "ship"))
    slow: dict[str, list[str]] = {}
    for f in model.get("not_faster") or []:
        ratio = f"{f['latency_ratio']:.2f}x" if finite(f.get("latency_ratio")) else "not below"
        slow.setdefault(str(f.get("parent")), []).append(f"b{f.get('batch_size')} {ratio}")
    for parent in model.get("not_faster_than") or []:
        slow.setdefault(str(parent), [])
    for parent, where in slow.items():
        detail = f" ({', '.join(where)} its latency)" if where else ""
        out.append((f"NOT FASTER than {parent}{detail}", "warn"))
    return out


def flag_cell(model: dict[str, Any]) -> Cell:
    found = flags(model)
    if not found:
        return Cell(DASH)
    tone = "warn" if any(t == "warn" for _, t in found) else "ship"
    return Cell("; ".join(s for s, _ in found), tone=tone)


def _threads(model: dict[str, Any]) -> str:
    lat = model.get("latency") or {}
    found = sorted({str(v["threads"]) for k, v in lat.items() if isinstance(v, dict) and v.get("threads")})
    return ", ".join(found) or DASH


def summary_table(models: list[dict[str, Any]]) -> Table:
    """Every model with quality, size, cost, latency (median and p95 per batch size) and flags."""
    sizes = batch_sizes(models)
    cols = ["model", "kind", "runtime", "modalities", "accuracy", "macro-F1", "ECE", "agreement",
            "gap recovered", "params", "x smaller", "MACs", "size"]
    for b in sizes:
        cols += [f"b{b} median ms", f"b{b} p95 ms"]
    cols += ["threads", "timed", "flags"]
    rows = []
    for m in models:
        lat = m.get("latency") or {}
        row = [Cell(m["name"], tone="ship" if m.get("ship") else None), Cell(text(m.get("kind"))),
               Cell(text(m.get("runtime"))), Cell("+".join(m.get("modalities") or []) or DASH),
               Cell(pct(m.get("accuracy"))), Cell(pct(m.get("macro_f1"))), Cell(num(m.get("ece"))),
               Cell(pct(m.get("teacher_agreement"), 1)), Cell(pct(m.get("gap_recovered"), 0)),
               Cell(count(m.get("parameters"))), Cell(num(m.get("compression"), ".1f")),
               Cell(si(m.get("macs"))), Cell(size(m.get("bytes_on_disk")))]
        for b in sizes:
            row += [Cell(num(latency_ms(m, b), ".3f")), Cell(num(latency_ms(m, b, "p95_ms"), ".3f"))]
        timed = {"subprocess": "own process", "in-process": "in process"}.get(lat.get("source"), text(
            lat.get("source")) if lat else DASH)
        row += [Cell(_threads(m)), Cell(f"{lat.get('runtime')}, {timed}" if lat else DASH), flag_cell(m)]
        rows.append(row)
    note = ("accuracy, macro-F1 and agreement (top-1 agreement with the teacher) on the test split; ECE: "
            "expected calibration error; gap recovered: share of the teacher–scratch accuracy gap a student "
            "closes; x smaller: teacher parameters / model parameters; MACs per sample; latency in ms per "
            "batch on CPU with the stated thread count")
    return Table("summary", "Summary", cols, rows, note=note).drop_empty_columns(keep=5)


def frontier_table(models: list[dict[str, Any]], axis: str) -> Table:
    """The models on the accuracy-versus-``axis`` frontier, cheapest first."""
    by_name = {m["name"]: m for m in models}
    label = PARETO_AXES[axis]
    rows = []
    for name in frontier(models, axis):
        m = by_name[name]
        cost = pareto_cost(m, axis)
        shown = num(cost, ".3f") if axis == "latency" else size(cost)
        rows.append([Cell(name, tone="ship" if m.get("ship") else None), Cell(text(m.get("runtime"))),
                     Cell(shown), Cell(pct(m.get("accuracy")))])
    note = "no model has this cost measured" if not rows else (
        "no other model is both cheaper (or as cheap) and more accurate (or as accurate)")
    return Table(f"frontier-{axis}", f"Pareto frontier: accuracy vs {label}",
                 ["model", "runtime", label, "accuracy"], rows, note=note)


def _modality_rank(m: str) -> tuple[int, str]:
    return (ORDER.index(m) if m in ORDER else len(ORDER), m)


def _subset_key(subset: str) -> tuple[str, ...]:
    """``"audio+image"`` → ``("image", "audio")``: modalities in the canonical order."""
    return tuple(sorted(subset.split("+"), key=_modality_rank))


def _rank(subset: tuple[str, ...]) -> list[tuple[int, str]]:
    return [_modality_rank(m) for m in subset]


def subsets_table(models: list[dict[str, Any]]) -> Table:
    """Accuracy of each model on every non-empty subset of its modalities (the others missing)."""
    entries = []
    for m in models:
        acc = {_subset_key(k): v for k, v in (m.get("modality_subsets") or {}).items()}
        mods = m.get("modalities") or []
        if not acc and mods and m.get("kind") != "exported" and finite(m.get("accuracy")):
            acc = {_subset_key("+".join(mods)): m["accuracy"]}  # a unimodal model: its one subset
        if acc:
            entries.append((m, acc))
    subsets = sorted({s for _, acc in entries for s in acc}, key=lambda s: (-len(s), _rank(s)))
    lo_hi = value_range([v for _, acc in entries for v in acc.values()])
    rows = []
    for m, acc in entries:
        mods = set(m.get("modalities") or [])
        cells = [Cell(m["name"])]
        for s in subsets:
            v = acc.get(s)
            cells.append(Cell(pct(v, 1), value=v) if v is not None else
                         Cell(DASH if set(s) <= mods else "n/a"))
        rows.append(cells)
    note = ("test accuracy with only the column's modalities present (the others removed); n/a: the model "
            "does not take that modality; colour from the lowest (light) to the highest (dark) accuracy here")
    return Table("modality-subsets", "Missing modalities: accuracy per modality subset",
                 ["model"] + ["+".join(s) for s in subsets], rows, note=note, heat=lo_hi)


def drop_one_table(models: list[dict[str, Any]]) -> Table:
    """Accuracy points each model loses when one modality is removed (its contribution)."""
    entries = [(m, m["drop_one_loss"]) for m in models if m.get("drop_one_loss")]
    mods = sorted({k for _, d in entries for k in d}, key=_modality_rank)
    lo_hi = value_range([v for _, d in entries for v in d.values()])
    rows = [[Cell(m["name"])] + [Cell(points(d.get(k)), value=d.get(k)) for k in mods] for m, d in entries]
    note = ("accuracy points lost when the column's modality is removed (negative: the model does better "
            "without it); a large number means the model leans on that modality")
    return Table("drop-one", "Per-modality contribution (points lost without it)", ["model", *mods], rows,
                 note=note, heat=lo_hi)


def alignment_table(models: list[dict[str, Any]]) -> Table:
    """Teacher-student feature alignment per modality (linear CKA and cosine), when measured."""
    entries = [(m, m["alignment"]) for m in models if isinstance(m.get("alignment"), dict) and m["alignment"]]
    mods = sorted({k for _, a in entries for k in a}, key=_modality_rank)
    cols = ["model"] + [f"{k} {stat}" for k in mods for stat in ("CKA", "cosine")]
    rows = []
    for m, a in entries:
        cells = [Cell(m["name"])]
        for k in mods:
            v = a.get(k) if isinstance(a.get(k), dict) else {}
            cells += [Cell(num(v.get("linear_cka")), value=v.get("linear_cka")),
                      Cell(num(v.get("cosine")), value=v.get("cosine"))]
        rows.append(cells)
    note = ("linear CKA (and mean cosine similarity, where measured) between the model's and the "
            "teacher's pooled features per modality; 1 = the same representation")
    return Table("alignment", "Feature alignment with the teacher", cols, rows, note=note,
                 heat=(0.0, 1.0)).drop_empty_columns()


def tasks_table(models: list[dict[str, Any]]) -> Table:
    """Accuracy on each extra task of a multi-task run."""
    names = sorted({t for m in models for t in (m.get("tasks") or {})})
    rows = []
    for m in models:
        if m.get("tasks"):
            accs = [(m["tasks"].get(t) or {}).get("accuracy") for t in names]
            rows.append([Cell(m["name"])] + [Cell(pct(a)) for a in accs])
    return Table("tasks", "Extra tasks: test accuracy", ["model", *names], rows)


def confusion_picks(models: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(label, model)`` for the confusion matrices shown: teacher, scratch student, shipped (or best)."""
    by_name = {m["name"]: m for m in models}
    picks: list[tuple[str, dict[str, Any]]] = []

    def add(label: str, m: dict[str, Any] | None) -> None:
        if m and m.get("confusion_matrix") and all(p["name"] != m["name"] for _, p in picks):
            picks.append((label, m))

    add("teacher", by_name.get("teacher"))
    add("scratch student", by_name.get("student-scratch"))
    shipped = next((m for m in models if m.get("ship")), None)
    seen = set()
    while shipped and not shipped.get("confusion_matrix") and shipped.get("parent") not in seen:
        seen.add(shipped.get("parent"))
        shipped = by_name.get(shipped.get("parent"))  # an ONNX artifact: its eager model's matrix
    if shipped:
        add("shipped student (eager model of the shipped artifact)", shipped)
    else:
        students = [m for m in models
                    if m.get("kind") in ("student", "compressed") and m.get("confusion_matrix")]
        add("best student", max(students, key=lambda m: m.get("accuracy") or 0.0, default=None))
    return picks


def confusion_table(label: str, model: dict[str, Any]) -> Table:
    """A confusion matrix (rows: true class, columns: predicted), coloured by row share."""
    matrix = model["confusion_matrix"]
    names = model.get("class_names") or [str(i) for i in range(len(matrix))]
    rows = []
    for name, row in zip(names, matrix, strict=False):
        total = sum(row) or 1
        rows.append([Cell(str(name))] + [Cell(str(v), value=v / total) for v in row])
    return Table(f"confusion-{model['name']}", f"Confusion matrix: {model['name']} ({label})",
                 ["true \\ predicted", *map(str, names)], rows, heat=(0.0, 1.0),
                 note="counts on the test split; colour: share of the true class's rows")
