"""Teacher stage for teachers that read raw records: pretrained encoders + a trained head, or an
external model (``teacher.pretrained`` / ``teacher.external``; guide: ``docs/teachers.md``).

* ``frozen_encoders``: build every pretrained encoder, compute each frozen encoder's embeddings
  once per sample into an embedding store (``cache/embeddings/``, over the raw records of every
  split), train the head model (the trained modalities' mmdistill encoders, the fusion and the
  head) with the supervised recipe on :func:`~mmdistill.teachers.frozen.teacher_samples`, and save
  ``teacher/teacher.json`` + ``teacher/head/``. With ``data.stream`` the train split's embeddings
  are one chunked pass over the shards and the head trains on the stream (:func:`open_stores`).
* ``external``: nothing trains; ``teacher/external.json`` records the config section, the
  teacher's preprocessing and its fingerprint, so the run folder describes its teacher and later
  stages rebuild exactly that teacher (or refuse when its files changed).

:func:`load_run_teacher` is what the distill, compress and evaluate stages call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from mmdistill.config.schema import Config, ExternalTeacherConfig
from mmdistill.data.batch import PRIMARY_TASK
from mmdistill.data.loaders import SampleDataset
from mmdistill.data.records import SPLITS, RawSample
from mmdistill.distill.cache import TeacherCache
from mmdistill.distill.cache_chunks import ChunkedTeacherCache
from mmdistill.errors import CheckpointError, DataError
from mmdistill.io_atomic import atomic_write_text
from mmdistill.recipes.data import TOKENIZER_FILE, DataBundle
from mmdistill.teachers import (
    EMBEDDINGS_DIR,
    FrozenEncodersTeacher,
    PreprocessSpec,
    Teacher,
    TeacherPlan,
    embedding_store,
    load_frozen_teacher,
    save_frozen_teacher,
    teacher_samples,
)
from mmdistill.teachers.frozen import HEAD_DIR, TEACHER_FILE, read_format_json
from mmdistill.teachers.spec import (
    build_external,
    build_plan,
    config_head_spec,
    teacher_kind,
    teacher_preprocessing,
)
from mmdistill.teachers.stores import open_embedding_store
from mmdistill.training.distributed import barrier, is_main
from mmdistill.training.logging import MetricsLogger

log = logging.getLogger(__name__)

TEACHER_DIR = "teacher"
CACHE_DIR = "cache"
EXTERNAL_FILE = "external.json"
EXTERNAL_FORMAT = "mmdistill.external_teacher/1"


def raw_teacher_saved(run_dir: Path) -> bool:
    """Whether ``run_dir/teacher`` holds a raw-record teacher (``teacher.json`` or ``external.json``)."""
    directory = Path(run_dir) / TEACHER_DIR
    return (directory / TEACHER_FILE).is_file() or (directory / EXTERNAL_FILE).is_file()


def own_preprocessing(cfg: Config, run_dir: Path) -> PreprocessSpec:
    """The teacher's preprocessing; text falls back on the run's tokenizer when the run has one."""
    tok = Path(run_dir) / TOKENIZER_FILE
    return teacher_preprocessing(cfg, tokenizer=tok if tok.is_file() else None)


def raw_records(data: DataBundle, split: str | None = None) -> list[RawSample]:
    """The raw records of ``split`` (None: every split, train first) that the data stage kept.

    Raises:
        DataError: the data stage did not keep them (the config's teacher reads preprocessed batches).
    """
    if data.raw is None:
        raise DataError("this run's data holds no raw records (DataBundle.raw is None): only a teacher "
                        "with teacher.pretrained or teacher.external reads them; prepare the data with "
                        "that config")
    missing = [s for s in ([split] if split is not None else SPLITS) if s not in data.raw]
    if missing:
        raise DataError(f"the raw records of the {'/'.join(missing)} split are not held in memory: it is "
                        "streamed (data.stream: true); read it with one pass over the shards "
                        "(raw_teacher_cache, mmdistill.data.shards.iter_split), or set data.stream: false")
    return list(data.raw[split]) if split is not None else [r for s in SPLITS for r in data.raw[s]]


def raw_teacher_cache(run_dir: Path, teacher: Teacher, data: DataBundle, cfg: Config, *,
                      features: Sequence[str] = ()) -> TeacherCache | ChunkedTeacherCache:
    """The raw-record teacher's outputs on the train split, cached under ``run_dir/cache`` (distill).

    In memory: :func:`~mmdistill.teachers.stores.teacher_cache` over the kept raw records. Streamed
    (``data.stream``): :func:`~mmdistill.teachers.stores.streamed_teacher_cache`, one chunked pass over
    the train shards' raw rows (bounded memory). Both are looked up by sample id.
    """
    from mmdistill.teachers import streamed_teacher_cache, teacher_cache

    show = cfg.logging.progress and not cfg.logging.quiet
    root = Path(run_dir) / CACHE_DIR
    if data.train_stream is not None:
        return streamed_teacher_cache(root, teacher, data.train_stream, features=features,
                                      batch_size=cfg.data.eval_batch_size, progress=show)
    return teacher_cache(root, teacher, raw_records(data, "train"), features=features,
                         batch_size=cfg.data.eval_batch_size, progress=show)


def open_stores(plan: TeacherPlan, data: DataBundle, run_dir: Path, cfg: Config, *,
                local: bool = False) -> dict[str, TeacherCache]:
    """Open (or build, once per sample) the embedding store of every stored encoder, over all splits.

    Every process of a distributed run must call it (rank 0 builds, the others wait); ``local=True``
    only opens stores that exist, without any collective call (a store that is missing is left out:
    its embeddings are then computed when needed), for code that runs on rank 0 alone. With
    ``data.stream`` each store is two joined (:func:`_streamed_stores`).
    """
    if data.train_stream is not None:
        return _streamed_stores(plan, data, run_dir, cfg, local=local)
    records = raw_records(data)
    root = Path(run_dir) / CACHE_DIR / EMBEDDINGS_DIR
    show = cfg.logging.progress and not cfg.logging.quiet
    stores = {}
    for m in plan.stored:
        if local:
            store = open_embedding_store(root, plan.encoders[m], records)
            if store is None:
                log.warning("teacher: no %s embedding store in %s; computing those embeddings again", m, root)
                continue
        else:
            store = embedding_store(root, plan.encoders[m], records, batch_size=cfg.data.eval_batch_size,
                                    progress=show)
        stores[m] = store
        log.info("teacher: %s embeddings of '%s' in %s (%d rows)", m, plan.specs[m].name, store.directory,
                 len(store))
    return stores


def _streamed_stores(plan: TeacherPlan, data: DataBundle, run_dir: Path, cfg: Config, *,
                     local: bool) -> dict[str, Any]:
    """:func:`open_stores` of a streamed run: per stored encoder, val/test embeddings built from their
    in-memory raw records and train's in one chunked pass over the shards, read as one
    :class:`~mmdistill.teachers.stores.SplitStore`."""
    from mmdistill.teachers.stores import (
        SplitStore,
        open_streamed_embedding_store,
        streamed_embedding_store,
    )

    assert data.train_stream is not None
    held = [r for s in SPLITS if s != "train" for r in raw_records(data, s)]
    root = Path(run_dir) / CACHE_DIR / EMBEDDINGS_DIR
    show = cfg.logging.progress and not cfg.logging.quiet
    bs = cfg.data.eval_batch_size
    stores: dict[str, Any] = {}
    for m in plan.stored:
        enc = plan.encoders[m]
        if local:
            parts = [open_embedding_store(root, enc, held),
                     open_streamed_embedding_store(root, enc, data.train_stream)]
            if any(p is None for p in parts):
                log.warning("teacher: no %s embedding store in %s; computing those embeddings again", m, root)
                continue
        else:
            parts = [embedding_store(root, enc, held, batch_size=bs, progress=show),
                     streamed_embedding_store(root, enc, data.train_stream, batch_size=bs, progress=show)]
        stores[m] = SplitStore(parts)  # type: ignore[arg-type]
        log.info("teacher: %s embeddings of '%s' in %s (%d rows, train streamed)", m, plan.specs[m].name,
                 root, len(stores[m]))
    return stores


def _head_data(data: DataBundle, plan: TeacherPlan, stores: dict[str, Any]) -> DataBundle:
    """The data the head model trains on: :func:`teacher_samples` of every split (in memory), or with
    ``data.stream`` of val/test, the train split streaming through a
    :class:`~mmdistill.teachers.frozen.TeacherSampleTransform` (same seed and shuffle buffer)."""
    st = data.train_stream
    splits = {s: SampleDataset(teacher_samples(raw_records(data, s), plan, stores))
              for s in SPLITS if st is None or s != "train"}
    if st is None:
        return replace(data, splits=splits)
    from mmdistill.teachers.frozen import TeacherSampleTransform

    train = st.derive(transform=TeacherSampleTransform(plan, stores), shuffle=True)
    return replace(data, splits=splits, train_stream=train)


def _head_extra(data: DataBundle, cfg: Config, plan: TeacherPlan) -> dict[str, Any]:
    return {"classes": data.classes, "tasks": data.tasks, "stage": "teacher", "seed": cfg.seed,
            "teacher_kind": "frozen_encoders", "preprocessing": plan.preprocessing.settings()}


def train_frozen_teacher(cfg: Config, data: DataBundle, run_dir: Path, *, logger: MetricsLogger,
                         resume: bool = False) -> FrozenEncodersTeacher:
    """Build the pretrained encoders, fill their embedding stores, train and save the head model.

    With ``data.stream`` the train split's embeddings are computed in one chunked pass over the
    shards and the head trains on the stream (per-row samples, bounded memory), like any student.

    ``resume=True`` continues an interrupted head training from ``teacher/head/resume``; the
    embedding stores are reopened, not recomputed.
    """
    from mmdistill.recipes.train import train_model

    plan = build_plan(cfg, own_preprocessing(cfg, run_dir))
    log.info("teacher: frozen %s, trained %s", ", ".join(f"{m}={plan.specs[m].name}" for m in plan.specs),
             ", ".join(plan.trained) or "(no encoder)")
    stores = open_stores(plan, data, run_dir, cfg)
    tasks = {PRIMARY_TASK: data.num_classes, **data.tasks} if data.tasks else None
    spec = config_head_spec(cfg, plan, num_classes=data.num_classes, tasks=tasks)
    directory = Path(run_dir) / TEACHER_DIR
    log.info("teacher: training its head on %s (%s)", "+".join(spec["encoders"]), data.source)
    head_cfg = cfg
    if data.train_stream is not None and cfg.data.num_workers:  # the transform holds encoders and stores
        log.info("teacher: the head's streamed samples are made in the main process (data.num_workers "
                 "applies to the other stages)")
        head_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"num_workers": 0})})
    trained = train_model(spec, _head_data(data, plan, stores), head_cfg, cfg.teacher.train,
                          directory / HEAD_DIR, stage="teacher", logger=logger, seed=cfg.seed, resume=resume)
    teacher = FrozenEncodersTeacher(plan, trained.model, stores=stores)
    if is_main():
        save_frozen_teacher(directory, teacher, extra=_head_extra(data, cfg, plan))
    barrier()
    return teacher


def save_external_teacher(cfg: Config, run_dir: Path) -> Teacher:
    """Build the ``teacher.external`` model (checks its files now) and write ``teacher/external.json``."""
    assert cfg.teacher.external is not None  # teacher_kind(cfg) == "external"
    pre = own_preprocessing(cfg, run_dir)
    teacher = build_external(cfg.teacher.external, pre)
    meta = {"format": EXTERNAL_FORMAT, "kind": "external", "external": cfg.teacher.external.model_dump(),
            "preprocessing": pre.settings(), "fingerprint": teacher.fingerprint(),
            "modalities": list(teacher.modalities), "num_classes": int(teacher.num_classes)}
    if is_main():
        directory = Path(run_dir) / TEACHER_DIR
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / EXTERNAL_FILE, json.dumps(meta, indent=2) + "\n")
    log.info("teacher: external %s model %s (nothing to train)", cfg.teacher.external.kind,
             cfg.teacher.external.path or cfg.teacher.external.module)
    return teacher


def run_raw_teacher_stage(cfg: Config, data: DataBundle, run_dir: Path, *, logger: MetricsLogger,
                          resume: bool = False) -> None:
    """The teacher stage of a ``teacher.pretrained`` / ``teacher.external`` config (the pipeline
    skips it when ``progress.json`` records it as done). ``resume``: continue an interrupted head
    training from its last completed epoch."""
    if teacher_kind(cfg) == "external":
        save_external_teacher(cfg, run_dir)
    else:
        train_frozen_teacher(cfg, data, run_dir, logger=logger, resume=resume)


def load_external_teacher(directory: Path) -> Teacher:
    """Rebuild the teacher ``external.json`` describes; refuse when its files changed since.

    Raises:
        CheckpointError: the file is unreadable or not this format, or the model's fingerprint differs.
    """
    path = Path(directory) / EXTERNAL_FILE
    meta = read_format_json(path, EXTERNAL_FORMAT, "run the teacher stage again")
    teacher = build_external(ExternalTeacherConfig.model_validate(meta["external"]),
                             PreprocessSpec.from_settings(meta["preprocessing"]))
    if teacher.fingerprint() != meta.get("fingerprint"):
        raise CheckpointError(f"{path}: the external teacher ({meta['external'].get('path')}) changed since "
                              "this run's teacher stage (other weights or preprocessing); its cached outputs "
                              "would not be its own: run the teacher stage again (a new run folder)")
    return teacher


def load_run_teacher(run_dir: Path, data: DataBundle, cfg: Config, *, local: bool = False) -> Teacher:
    """The raw-record teacher saved in ``run_dir/teacher``, frozen, with its embedding stores attached
    (``local``: see :func:`open_stores`; every process must call it otherwise).

    Raises:
        CheckpointError: neither ``teacher.json`` nor ``external.json`` is there, or what is there is
            incomplete (``head/`` files missing) or stale (a pretrained encoder's files changed).
    """
    directory = Path(run_dir) / TEACHER_DIR
    if (directory / TEACHER_FILE).is_file():
        head = directory / HEAD_DIR
        missing = [f for f in ("model.json", "model.safetensors") if not (head / f).is_file()]
        if missing:
            held = sorted(p.name for p in head.iterdir()) if head.is_dir() else "nothing: no such folder"
            raise CheckpointError(f"{head}: the teacher's trained head lacks {', '.join(missing)} (it holds "
                                  f"{held}); rerun the teacher stage ('teacher' in stages, a new run folder)")
        teacher = load_frozen_teacher(directory)
        teacher.stores = open_stores(teacher.plan, data, run_dir, cfg, local=local)
        return teacher.eval()
    if (directory / EXTERNAL_FILE).is_file():
        teacher = load_external_teacher(directory)
        return teacher.eval().requires_grad_(False)  # type: ignore[union-attr]
    raise CheckpointError(f"{directory}: no {TEACHER_FILE} (pretrained encoders + head) or {EXTERNAL_FILE} "
                          "(external teacher); add 'teacher' to stages, or run the pipeline into this folder")
