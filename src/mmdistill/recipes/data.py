"""Data stage: read records (built-in, manifest or Parquet shards), fit the tokenizer, preprocess every split.

The tokenizer is trained on the training split only and saved with the run
(``run_dir/tokenizer.json``); a later stage or a resumed run reloads it so that token ids never
change within a run.

With ``data.stream: true`` (shards only) the train split is not read into memory: it becomes a
:class:`~mmdistill.data.shard_stream.ShardStream` that decodes and preprocesses rows on the fly (same
:class:`~mmdistill.data.preprocess.Preprocessor`), the tokenizer is fitted on the train shards'
text column alone, and val/test stay in memory. :func:`train_loader` gives the train stages the
right loader for either case, :func:`first_train_samples` the train split's first rows in file order
(pruning's Taylor batches, quantization calibration, the export example).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from torch.utils.data import DataLoader

from mmdistill.config.schema import Config
from mmdistill.data.batch import Sample
from mmdistill.data.loaders import SampleDataset, make_loader
from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.records import SPLITS, RawSample
from mmdistill.data.transforms.audio import LogMel
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.data.transforms.text import TextTokenizer
from mmdistill.errors import DataError
from mmdistill.io_atomic import atomic_path, atomic_write_json
from mmdistill.teachers.spec import teacher_kind
from mmdistill.training.distributed import barrier, is_main
from mmdistill.training.epochs import StreamBatches

if TYPE_CHECKING:
    from mmdistill.data.shard_stream import ShardStream

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
DATA_REPORT_FILE = "data.json"


@dataclass
class DataBundle:
    """Preprocessed splits plus what models need to know about the data.

    Attributes:
        splits: split name → in-memory dataset of tensor samples.
        classes: class names of the primary task (index = label).
        tasks: extra task name → number of classes (empty for single-task data).
        vocab_size: tokenizer vocabulary size (0 when the data has no text modality).
        skipped: manifest rows skipped under ``on_error: skip`` (row, id, reason).
        source: human-readable description of where the data came from.
        raw: split → the raw records (same order as ``splits``), kept only when the teacher reads
            raw records with its own preprocessing (``teacher.pretrained`` / ``teacher.external``;
            see :mod:`mmdistill.recipes.teacher`); None otherwise, so ordinary runs free them. With
            ``data.stream`` it holds val and test only (the teacher reads train from the shards).
        train_stream: with ``data.stream``, the train split as a shuffled stream of preprocessed
            samples; ``splits`` then holds only val and test. None for in-memory data.
    """

    splits: dict[str, SampleDataset]
    classes: list[str]
    tasks: dict[str, int]
    vocab_size: int
    skipped: list[dict] = field(default_factory=list)
    source: str = ""
    raw: dict[str, list[RawSample]] | None = None
    train_stream: ShardStream | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_size(self) -> int:
        """Rows of the train split (all ranks together), streamed or in memory."""
        if self.train_stream is not None:
            return self.train_stream.index.rows("train")
        return len(self.splits["train"])


def first_train_samples(data: DataBundle, n: int) -> list[Sample]:
    """The first ``n`` preprocessed rows of the train split in file order (all of it when shorter).

    The same rows whether the split is in memory or streamed (``data.stream``: read from the shards
    in packing order, which is manifest order, by :meth:`~mmdistill.data.shard_stream.ShardStream.head`),
    and independent of the epoch shuffle and the DDP rank. Memory: the ``n`` rows. This is what
    pruning's Taylor batches, quantization calibration and the export example input read.
    """
    if data.train_stream is not None:
        return data.train_stream.head(n)
    return list(data.splits["train"].samples[:n])


def train_loader(
    data: DataBundle, batch_size: int, *, seed: int, distributed: bool, num_workers: int = 0
) -> DataLoader | StreamBatches:
    """The train split's loader: shuffled per epoch (seed + epoch), ``batch_size`` rows per rank.

    In memory: :func:`~mmdistill.data.loaders.make_loader` (a DistributedSampler under DDP, which
    pads ranks to equal length). Streamed: :class:`~mmdistill.training.epochs.StreamBatches`, equal
    batch counts per rank (it drops at most one row per rank and epoch, see there); the stream's
    order is seeded by ``data.train_stream``'s seed (``cfg.seed``) and the epoch.
    """
    if data.train_stream is not None:
        return StreamBatches(data.train_stream, batch_size, num_workers=num_workers)
    return make_loader(data.splits["train"], batch_size, shuffle=True, seed=seed, drop_last=False,
                       distributed=distributed, num_workers=num_workers)


def _read_records(cfg: Config) -> tuple[list[RawSample], list[str], dict[str, int], list[dict], str]:
    data = cfg.data
    if data.source == "builtin":
        from mmdistill.data.datasets.builtin import BUILTIN_NAME, CLASS_NAMES, load_builtin

        records: list[RawSample] = []
        for split in SPLITS:
            recs = load_builtin(split, limit=data.limit if split == "train" else None)
            records.extend(recs)
        tasks = {t: 2 for t in data.tasks}  # the built-in dataset offers only "parity" (validated)
        return records, list(CLASS_NAMES), tasks, [], f"built-in dataset '{BUILTIN_NAME}'"

    if data.source == "shards":
        return _read_shards(cfg)

    from mmdistill.data.datasets.manifest import read_manifest

    assert data.manifest is not None  # validated
    md = read_manifest(
        data.manifest,
        tasks=data.tasks,
        classes=data.classes,
        on_error=data.on_error,
        allow_outside_root=data.allow_outside_root,
        target_sample_rate=data.audio.sample_rate,
        progress=cfg.logging.progress and not cfg.logging.quiet,
    )
    records = md.records
    if data.limit is not None:
        train = [r for r in records if r.split == "train"][: data.limit]
        records = train + [r for r in records if r.split != "train"]
    skipped = [{"row": s.row, "id": s.id, "reason": s.reason} for s in md.skipped]
    tasks = {t: len(c) for t, c in md.task_classes.items()}
    return records, md.classes, tasks, skipped, f"manifest {data.manifest}"


def _read_shards(cfg: Config) -> tuple[list[RawSample], list[str], dict[str, int], list[dict], str]:
    # Every split is read into memory (the stages after this one can index map-style datasets);
    # data.stream: true streams the train split instead (_prepare_streamed; docs/data.md, "Shards").
    from mmdistill.data.shards import read_index, read_split

    data = cfg.data
    assert data.shards is not None  # validated
    index = read_index(data.shards)
    records: list[RawSample] = []
    for split in SPLITS:
        recs = read_split(index, split, tasks=data.tasks, target_sample_rate=data.audio.sample_rate)
        records.extend(recs[: data.limit] if split == "train" and data.limit is not None else recs)
    tasks = {t: len(index.task_classes[t]) for t in data.tasks}
    return records, list(index.classes), tasks, list(index.skipped), f"shards {data.shards}"


def _tokenizer(cfg: Config, records: list[RawSample] | None, run_dir: Path) -> TextTokenizer | None:
    """Fit (rank 0) or reload the run's tokenizer; ``records=None``: read the train shards' text column."""
    if "text" not in cfg.data.modalities:
        return None
    path = run_dir / TOKENIZER_FILE
    if not path.exists():
        # Every rank checks (they hold the same records), so a bad dataset fails on all of them.
        if records is None:  # streamed: the text column alone, without the media bytes
            from mmdistill.data.shards import read_column

            assert cfg.data.shards is not None  # validated
            texts = [t for t in read_column(cfg.data.shards, "train", "text") if t is not None]
        else:
            texts = [r.text for r in records if r.split == "train" and r.text is not None]
        if not texts:
            raise DataError(
                "the training split has no text, so no tokenizer can be trained; remove 'text' from "
                "data.modalities or add text to the training rows"
            )
        if is_main():
            text_cfg = cfg.data.text
            tok = TextTokenizer.train(texts, vocab_size=text_cfg.vocab_size, lowercase=text_cfg.lowercase)
            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, keep_suffix=True) as tmp:  # keeps the .json suffix save() looks at
                tok.save(tmp)  # atomic: a crash never leaves a torn tokenizer.json
    barrier()  # under torchrun, the other ranks read the file rank 0 wrote: one vocabulary per run
    return TextTokenizer.load(path)


def preprocessor_from_config(cfg: Config, tokenizer: TextTokenizer | None) -> Preprocessor:
    """Build the student-side :class:`Preprocessor` from ``cfg.data`` (flat keyword arguments)."""
    d = cfg.data
    mods = d.modalities
    image = (
        ImageTransform(size=d.image.size, channels=d.image.channels, mean=d.image.mean, std=d.image.std)
        if "image" in mods
        else None
    )
    audio = (
        LogMel(
            sample_rate=d.audio.sample_rate,
            n_fft=d.audio.n_fft,
            hop_length=d.audio.hop_length,
            n_mels=d.audio.n_mels,
            f_min=d.audio.f_min,
            f_max=d.audio.f_max,
            max_seconds=d.audio.max_seconds,
        )
        if "audio" in mods
        else None
    )
    return Preprocessor(
        image=image, audio=audio, tokenizer=tokenizer, max_text_length=d.text.max_length, modalities=mods
    )


def prepare_data(cfg: Config, run_dir: Path) -> DataBundle:
    """Read, tokenize and preprocess every split named in ``cfg.data``; write ``run_dir/data.json``.

    Raises:
        DataError: a split is empty, or a data file/row is bad (see the manifest reader).
    """
    if cfg.data.stream:
        return _prepare_streamed(cfg, run_dir)
    records, classes, tasks, skipped, source = _read_records(cfg)
    tokenizer = _tokenizer(cfg, records, run_dir)
    pre = preprocessor_from_config(cfg, tokenizer)
    show = cfg.logging.progress and not cfg.logging.quiet
    splits: dict[str, SampleDataset] = {}
    raw: dict[str, list[RawSample]] = {}
    for split in SPLITS:
        raws = [r for r in records if r.split == split]
        if not raws:
            raise DataError(
                f"the {split} split of {source} is empty; every run needs train, val and test rows "
                "(set the 'split' column of the manifest)"
            )
        splits[split] = SampleDataset(pre.process_all(raws, desc=f"preprocess {split}", progress=show))
        raw[split] = raws
    if skipped:
        log.warning("skipped %d bad row(s) of %s under data.on_error=skip (listed in %s)",
                    len(skipped), source, DATA_REPORT_FILE)
    bundle = DataBundle(
        splits=splits,
        classes=list(classes),
        tasks=tasks,
        vocab_size=tokenizer.vocab_size if tokenizer is not None else 0,
        skipped=skipped,
        source=source,
        raw=raw if teacher_kind(cfg) != "mmdistill" else None,
    )
    _write_report(bundle, run_dir, {s: len(ds) for s, ds in splits.items()})
    return bundle


def _write_report(bundle: DataBundle, run_dir: Path, sizes: dict[str, int], **more: object) -> None:
    report = {
        "source": bundle.source,
        "classes": bundle.classes,
        "tasks": bundle.tasks,
        "sizes": sizes,
        "vocab_size": bundle.vocab_size,
        "skipped_count": len(bundle.skipped),
        "skipped": bundle.skipped,
        **more,
    }
    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / DATA_REPORT_FILE, report)


def _prepare_streamed(cfg: Config, run_dir: Path) -> DataBundle:
    """``data.stream``: train as a :class:`ShardStream` (preprocessed on the fly), val/test in memory."""
    from mmdistill.data.shard_stream import ShardStream
    from mmdistill.data.shards import read_index, read_split

    data = cfg.data
    assert data.shards is not None  # validated
    index = read_index(data.shards)
    source = f"shards {data.shards}"
    for split in SPLITS:
        if index.rows(split) == 0:
            raise DataError(f"the {split} split of {source} is empty; every run needs train, val and test "
                            "rows (set the 'split' column of the manifest, then pack again)")
    tokenizer = _tokenizer(cfg, None, run_dir)
    pre = preprocessor_from_config(cfg, tokenizer)
    show = data.num_workers == 0 and cfg.logging.progress and not cfg.logging.quiet
    raw = {s: read_split(index, s, tasks=data.tasks, target_sample_rate=data.audio.sample_rate)
           for s in SPLITS if s != "train"}
    splits = {s: SampleDataset(pre.process_all(recs, desc=f"preprocess {s}", progress=show))
              for s, recs in raw.items()}
    stream = ShardStream(index, "train", transform=pre, shuffle=True, seed=cfg.seed,
                         tasks=data.tasks, target_sample_rate=data.audio.sample_rate)
    bundle = DataBundle(
        splits=splits, classes=list(index.classes), tasks={t: len(index.task_classes[t]) for t in data.tasks},
        vocab_size=tokenizer.vocab_size if tokenizer is not None else 0, skipped=list(index.skipped),
        source=source, train_stream=stream,
        raw=raw if teacher_kind(cfg) != "mmdistill" else None,  # val/test only: train is read from the shards
    )
    log.info("data: train streamed from %s (%d rows, shuffle buffer %d), val/test in memory",
             data.shards, index.rows("train"), stream.buffer_size)
    _write_report(bundle, run_dir, {"train": index.rows("train"), **{s: len(d) for s, d in splits.items()}},
                  streamed=["train"])
    return bundle
