"""The run's teachers for the distill and compress stages: where they are, loading and checks.

``teacher`` (``run_dir/teacher``) is an mmdistill model (``model.json``), or, for a
``teacher.pretrained`` / ``teacher.external`` config, the raw-record teacher the teacher stage saved
(:mod:`mmdistill.recipes.teacher`); ``baseline-<m>`` are the unimodal baselines. Everything here
fails before training with the file and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from mmdistill.config.distill_checks import baseline_subsets, teacher_modalities, variant_teachers
from mmdistill.config.schema import Config
from mmdistill.errors import CheckpointError
from mmdistill.io_atomic import atomic_write_bytes
from mmdistill.models.checkpoint import read_model_json
from mmdistill.recipes.data import TOKENIZER_FILE, DataBundle
from mmdistill.recipes.teacher import load_run_teacher, raw_teacher_saved
from mmdistill.recipes.train import load_trained
from mmdistill.teachers.spec import teacher_kind
from mmdistill.training.distributed import is_main

log = logging.getLogger(__name__)


def teacher_directory(run_dir: Path, name: str) -> Path:
    """Where the run model ``name`` (``teacher``, ``baseline-<m>`` or ``baseline-<a>+<b>``) is saved."""
    if name.startswith("baseline-"):
        return run_dir / "baselines" / name.removeprefix("baseline-")
    return run_dir / "teacher"


def baseline_scheduled(cfg: Config, name: str) -> bool:
    """Whether the baselines stage of ``cfg`` trains the run model ``name`` (``baseline-...``)."""
    mods = name.removeprefix("baseline-")
    if "+" in mods:
        return mods in baseline_subsets(cfg)
    return cfg.baselines.unimodal and mods in cfg.data.modalities


def adopt_teacher_tokenizer(checkpoint: Path, run_dir: Path) -> None:
    """Copy the tokenizer a loaded teacher was trained with into ``run_dir`` (if the run has none).

    A teacher's text encoder only understands the token ids of its own tokenizer, which
    :func:`~mmdistill.recipes.train.checkpoint_extra` names in ``model.json`` and which sits in the
    teacher's run folder (the checkpoint's parent). Without this, the data stage would train a new
    tokenizer with different ids.

    Raises:
        CheckpointError: the run already holds a different tokenizer.
    """
    meta = read_model_json(checkpoint)
    name = (meta.get("extra") or {}).get("tokenizer")
    if not name or "text" not in meta["spec"].get("modalities", []):
        return
    source = next((d / name for d in (checkpoint, checkpoint.parent) if (d / name).is_file()), None)
    target = run_dir / TOKENIZER_FILE
    if source is None:
        log.warning("teacher %s names tokenizer %s but it is not next to it; the run trains its own",
                    checkpoint, name)
        return
    if target.exists():
        if target.read_bytes() != source.read_bytes():
            raise CheckpointError(
                f"{target}: this run's tokenizer differs from the one teacher {checkpoint} was trained with "
                f"({source}); use a new run folder, or delete {target} so the teacher's is copied"
            )
        return
    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, source.read_bytes())  # a torn tokenizer.json would be trusted
        log.info("tokenizer: using the teacher's (%s)", source)


def check_teacher(model: nn.Module, name: str, data: DataBundle, cfg: Config, *, source: str) -> None:
    """Fail before training when a teacher does not fit the data or the config.

    Raises:
        CheckpointError: class count, modalities or text vocabulary differ, naming ``source`` and the fix.
    """
    problems = []
    if model.num_classes != data.num_classes:
        problems.append(f"it predicts {model.num_classes} classes but the data has {data.num_classes} "
                        f"({', '.join(data.classes[:5])}{', ...' if data.num_classes > 5 else ''})")
    configured = teacher_modalities(cfg, name)
    if sorted(model.modalities) != sorted(configured):
        key = ("teacher.modalities" if name == "teacher"
               else "baselines.subsets" if "+" in name else "data.modalities")
        problems.append(f"it reads {'+'.join(model.modalities)} but the config says {'+'.join(configured)} "
                        f"({key}); set {key} to match the checkpoint")
    text = (getattr(model, "spec", None) or {}).get("encoders", {}).get("text", {}).get("kwargs", {})
    if "vocab_size" in text and data.vocab_size and int(text["vocab_size"]) != data.vocab_size:
        problems.append(f"its text encoder has a vocabulary of {text['vocab_size']} tokens but the run's "
                        f"tokenizer has {data.vocab_size}; distill in the teacher's run folder (it holds "
                        "its tokenizer.json)")
    if problems:
        raise CheckpointError(f"{source}: teacher '{name}' does not match this run: {'; '.join(problems)}; "
                              "or point to a teacher trained on this data")


def teacher_keys(cfg: Config) -> dict[str, str]:
    """Teacher name → the config key that asks for it (first variant wins), for error messages."""
    keys: dict[str, str] = {}
    for name, v in cfg.distill.students.items():
        key = f"distill.students.{name}.teachers" if v.teachers is not None else "distill.teachers"
        for t in variant_teachers(cfg, v):
            keys.setdefault(t, key)
    return keys


def _missing_teacher(name: str, directory: Path, key: str) -> CheckpointError:
    stage = "teacher" if name == "teacher" else "baselines"
    return CheckpointError(
        f"{key}: '{name}' has no checkpoint at {directory}; add '{stage}' to stages (before distill) or "
        f"train it into this run folder first, or remove '{name}' from the teachers"
    )


def check_distill_inputs(cfg: Config, run_dir: Path) -> None:
    """Before any stage runs: every teacher the students need is trained by this run or already saved.

    Raises:
        CheckpointError: a teacher will not exist when the distill stage starts.
    """
    if "distill" not in cfg.stages:
        return
    for name, key in teacher_keys(cfg).items():
        if name == "teacher":
            scheduled = "teacher" in cfg.stages
        else:
            scheduled = "baselines" in cfg.stages and baseline_scheduled(cfg, name)
        directory = teacher_directory(run_dir, name)
        saved = (directory / "model.json").is_file() or (name == "teacher" and raw_teacher_saved(run_dir))
        if not scheduled and not saved:
            raise _missing_teacher(name, directory, key)


def load_teachers(names: list[str], run_dir: Path, data: DataBundle, cfg: Config) -> dict[str, nn.Module]:
    """Load and check the run models ``names`` (frozen, eval mode) from ``run_dir``.

    ``teacher`` of a ``teacher.pretrained`` / ``teacher.external`` config is the raw-record teacher
    saved by the teacher stage (:func:`~mmdistill.recipes.teacher.load_run_teacher`).
    """
    teachers: dict[str, nn.Module] = {}
    keys = teacher_keys(cfg)
    for name in names:
        directory = teacher_directory(run_dir, name)
        if name == "teacher" and teacher_kind(cfg) != "mmdistill":
            model: nn.Module = load_run_teacher(run_dir, data, cfg)  # type: ignore[assignment]
            check_teacher(model, name, data, cfg, source=str(directory))
            teachers[name] = model.requires_grad_(False).eval()
            continue
        if not (directory / "model.json").is_file():
            raise _missing_teacher(name, directory, keys.get(name, "distill.teachers"))
        model = load_trained(directory).model
        check_teacher(model, name, data, cfg, source=str(directory))
        teachers[name] = model.requires_grad_(False).eval()
    return teachers
