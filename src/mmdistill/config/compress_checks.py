"""Semantic checks of the ``compress:`` and ``export:`` sections (run by ``validation.semantic_problems``).

Each problem is one line ``<dotted.key>: <what is wrong>, got <value>; <fix>``. The names a
compress stage produces are fixed here, so ``export.variants`` can be checked before any training.
"""

from __future__ import annotations

from mmdistill.config.schema import Config

PRUNED, SPARSE = "pruned", "sparse"


def compress_source(cfg: Config) -> str:
    """The student the compress stage starts from: ``compress.source``, else the first distilled one."""
    if cfg.compress.source is not None:
        return cfg.compress.source
    return next(iter(cfg.distill.students), "scratch")


def qat_name(source: str, bits: int) -> str:
    return f"{source}-qat{bits}"


def compressed_names(cfg: Config) -> list[str]:
    """Names (``students/<name>``) the compress stage writes with this config, in order.

    A QAT variant whose bit width is chosen from the sweep (``qat.bits: null``) is not listed: its
    name is only known after the sweep.
    """
    c, src = cfg.compress, compress_source(cfg)
    names: list[str] = []
    if c.prune.enabled:
        names.append(f"{src}-{PRUNED}")
    if c.sparsity.enabled:
        names.append(f"{src}-{SPARSE}")
    if c.qat.enabled and c.qat.bits is not None:
        names.append(qat_name(src, c.qat.bits))
    return names


def known_students(cfg: Config) -> list[str]:
    """Student folder names a run with this config can hold (scratch, distilled, compressed)."""
    return ["scratch", *cfg.distill.students, *compressed_names(cfg)]


def compress_problems(cfg: Config) -> list[str]:
    """Every cross-field problem of ``cfg.compress`` and ``cfg.export``."""
    from mmdistill.config.validation import show, suggest

    problems: list[str] = []
    c = cfg.compress
    choices = ["scratch", *cfg.distill.students]
    if "compress" in cfg.stages and c.source is not None and c.source not in choices:
        problems.append(f"compress.source: no student named {show(c.source)} in this run"
                        f"{suggest(c.source, choices, 'students')}; name 'scratch' or a distill.students "
                        "entry")
    if c.prune.enabled and c.prune.ratio == 0 and not any(c.prune.branch_ratios.values()):
        problems.append("compress.prune.ratio: 0 with no branch_ratios prunes nothing, got 0; set a ratio in "
                        "(0, 1) (e.g. 0.5) or compress.prune.enabled=false")
    if c.qat.enabled and c.qat.bits is None and not c.sweep.enabled:
        problems.append("compress.qat.bits: null picks the bit width from the sweep, but compress.sweep is "
                        "disabled; set compress.qat.bits (2-8) or compress.sweep.enabled=true")
    for branch in c.qat.policy:
        if branch not in ("image", "text", "audio", "fusion", "head", "default"):
            problems.append(f"compress.qat.policy.{branch}: not a branch, got {show(branch)}"
                            f"{suggest(branch, ['image', 'text', 'audio', 'fusion', 'head', 'default'])}; "
                            "use a branch name or 'default'")
    for name in (c.sweep.branches or []):
        if name in ("image", "text", "audio") and name not in cfg.data.modalities:
            problems.append(f"compress.sweep.branches: the data has no modality {show(name)}; "
                            f"modalities: {', '.join(cfg.data.modalities)}")
    problems += _recovery_mixup_problems(cfg)
    e = cfg.export
    if e.variants is not None:
        known = known_students(cfg)
        for i, name in enumerate(e.variants):
            bare = name.removeprefix("student-")
            if bare not in known and not bare.startswith(f"{compress_source(cfg)}-qat"):
                problems.append(f"export.variants[{i}]: no student named {show(name)} in this run"
                                f"{suggest(bare, known, 'students')}")
    if e.latency.enabled and not e.latency.batch_sizes:
        problems.append("export.latency.batch_sizes: must list at least one batch size when "
                        "export.latency.enabled is true, got []; e.g. [1, 64], or "
                        "export.latency.enabled=false")
    return problems


def _recovery_mixup_problems(cfg: Config) -> list[str]:
    """Mixup in a recovery fine-tune needs the teacher online, as for a distilled student."""
    from mmdistill.config.distill_checks import mixup_problems
    from mmdistill.config.schema import DistillStudentConfig

    c = cfg.compress
    problems: list[str] = []
    fine_tunes = (
        ("compress.prune.recover", c.prune.recover, c.prune.enabled and c.prune.recover.epochs > 0),
        ("compress.qat.recover", c.qat.recover, c.qat.enabled),
    )
    for key, rec, used in fine_tunes:
        if used and rec.mixup > 0:
            variant = DistillStudentConfig(strategy=rec.strategy, mixup=rec.mixup)
            problems += mixup_problems(key, variant, list(cfg.distill.teachers[:1]), cfg)
    return problems
