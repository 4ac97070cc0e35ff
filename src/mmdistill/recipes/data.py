"""Data stage: read records (built-in or manifest), fit the tokenizer, preprocess every split.

The tokenizer is trained on the training split only and saved with the run
(``run_dir/tokenizer.json``); a later stage or a resumed run reloads it so that token ids never
change within a run.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from mmdistill.config.schema import Config
from mmdistill.data.loaders import SampleDataset
from mmdistill.data.preprocess import Preprocessor
from mmdistill.data.records import SPLITS, RawSample
from mmdistill.data.transforms.audio import LogMel
from mmdistill.data.transforms.image import ImageTransform
from mmdistill.data.transforms.text import TextTokenizer
from mmdistill.errors import DataError
from mmdistill.teachers.spec import teacher_kind
from mmdistill.training.distributed import barrier, is_main

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
            see :mod:`mmdistill.recipes.teacher`); None otherwise, so ordinary runs free them.
    """

    splits: dict[str, SampleDataset]
    classes: list[str]
    tasks: dict[str, int]
    vocab_size: int
    skipped: list[dict] = field(default_factory=list)
    source: str = ""
    raw: dict[str, list[RawSample]] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


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


def _tokenizer(cfg: Config, records: list[RawSample], run_dir: Path) -> TextTokenizer | None:
    if "text" not in cfg.data.modalities:
        return None
    path = run_dir / TOKENIZER_FILE
    if not path.exists():
        # Every rank checks (they hold the same records), so a bad dataset fails on all of them.
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
            tmp = path.with_name(f".tmp-{path.name}")  # keeps the .json suffix save() looks at
            tok.save(tmp)
            os.replace(tmp, path)  # atomic: a crash never leaves a torn tokenizer.json
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
    report = {
        "source": source,
        "classes": bundle.classes,
        "tasks": tasks,
        "sizes": {s: len(ds) for s, ds in splits.items()},
        "vocab_size": bundle.vocab_size,
        "skipped_count": len(skipped),
        "skipped": skipped,
    }
    if is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DATA_REPORT_FILE).write_text(json.dumps(report, indent=2))
    return bundle
