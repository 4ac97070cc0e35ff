"""Which stages of a run are complete: ``RUN_DIR/progress.json``, the record ``--resume`` trusts.

A model folder that exists proves nothing (a run killed while saving leaves one half written);
the pipeline marks a stage or one of its models done only after the model is saved, so
``mmdistill run --resume RUN_DIR`` skips exactly what completed and continues the rest.

Layout (JSON, rewritten atomically after every change, by rank 0)::

    {"version": 1, "status": "running" | "finished",
     "stages": {"teacher":  {"complete": true,  "done": ["teacher"]},
                "distill":  {"complete": false, "done": ["student-kd"]}, ...}}

``stages`` is keyed by pipeline stage (``teacher``, ``baselines``, ``student``, ``distill``,
``compress``, ``export``, ``evaluate``); ``done`` lists the models of that stage saved so far,
by their stage name in ``metrics.jsonl`` (``baseline-image``, ``student-kd-pruned``, ...);
``complete`` is set when the whole stage has finished.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmdistill.errors import CheckpointError
from mmdistill.io_atomic import atomic_write_text
from mmdistill.training.distributed import is_main
from mmdistill.training.kill_hook import maybe_test_kill_at
from mmdistill.training.resume import RESUME_DIR, clear_resume_state

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
FORMAT_VERSION = 1
_MODEL_DIRS = ("teacher", "baselines/*", "students/*")  # where training stages keep resume/ folders


def stale_resume_dirs(run_dir: Path) -> list[Path]:
    """Every ``resume/`` folder a training stage of ``run_dir`` left behind."""
    found: list[Path] = []
    for pattern in _MODEL_DIRS:
        found += [p / RESUME_DIR for p in sorted(run_dir.glob(pattern)) if (p / RESUME_DIR).is_dir()]
    return found


class RunProgress:
    """The completed stages and models of one run folder (see the module doc).

    Build it with :meth:`fresh` (a new run: forget what the stages about to run did before) or
    :meth:`load` (``--resume``). Every rank keeps the same record in memory; only rank 0 writes.

    Attributes:
        run_dir: the run folder.
        resuming: True when loaded for ``--resume``: interrupted trainings continue from their
            last completed epoch.
    """

    def __init__(self, run_dir: Path, stages: dict[str, dict[str, Any]], *, resuming: bool,
                 status: str = "running") -> None:
        self.run_dir = Path(run_dir)
        self.stages = stages
        self.resuming = resuming
        self.status = status

    @property
    def path(self) -> Path:
        """``RUN_DIR/progress.json``."""
        return self.run_dir / PROGRESS_FILE

    @classmethod
    def fresh(cls, run_dir: Path, stages: Iterable[str]) -> RunProgress:
        """Start a run: the ``stages`` about to run are marked not done; other stages' records stay.

        Any resume state left in the folder by an interrupted run is deleted (with a warning): a
        run without ``--resume`` starts its trainings over and never continues an old one.
        """
        old = cls._read(run_dir / PROGRESS_FILE)
        kept = {k: v for k, v in (old or {}).get("stages", {}).items() if k not in set(stages)}
        progress = cls(run_dir, kept, resuming=False)
        if is_main():
            stale = stale_resume_dirs(Path(run_dir))
            if stale:
                log.warning("%s holds the state of an interrupted run (%s); starting over. To continue "
                            "it instead: mmdistill run --resume %s", run_dir,
                            ", ".join(str(p.relative_to(run_dir).parent) for p in stale), run_dir)
                for p in stale:
                    clear_resume_state(p)
        progress.write()
        return progress

    @classmethod
    def load(cls, run_dir: Path) -> RunProgress:
        """The record of an earlier run, to resume it.

        Raises:
            CheckpointError: ``progress.json`` is missing or unreadable (naming it and the fix).
        """
        path = Path(run_dir) / PROGRESS_FILE
        data = cls._read(path)
        if data is None:
            raise CheckpointError(
                f"{path}: not found, so it is unknown which stages of {run_dir} completed; resume only "
                "folders written by `mmdistill run` (this version or later), or start a new run"
            )
        return cls(Path(run_dir), dict(data.get("stages", {})), resuming=True,
                   status=str(data.get("status", "running")))

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc}); delete it and start a new run") from exc
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: not a progress file of format {FORMAT_VERSION}; delete it and "
                                  "start a new run")
        return data

    def done(self, stage: str, model: str | None = None) -> bool:
        """Whether ``model`` of ``stage`` was saved (``model=None``: whether the whole stage finished)."""
        entry = self.stages.get(stage, {})
        return bool(entry.get("complete")) if model is None else model in entry.get("done", [])

    def mark(self, stage: str, model: str | None = None) -> None:
        """Record ``model`` of ``stage`` as saved (``model=None``: the whole stage as finished)."""
        maybe_test_kill_at(f"mark:{stage}:{model or '*'}")  # test-only: saved, not yet recorded
        entry = self.stages.setdefault(stage, {"complete": False, "done": []})
        if model is None:
            entry["complete"] = True
        elif model not in entry["done"]:
            entry["done"].append(model)
        self.write()

    def finish(self) -> None:
        """Record that every configured stage ran."""
        self.status = "finished"
        self.write()

    def summary(self) -> str:
        """What is done, for the log: ``teacher, baselines, distill (student-kd)``."""
        parts = []
        for stage, entry in self.stages.items():
            if entry.get("complete"):
                parts.append(stage)
            elif entry.get("done"):
                parts.append(f"{stage} ({', '.join(entry['done'])})")
        return ", ".join(parts) or "nothing"

    def write(self) -> None:
        """Rewrite ``progress.json`` atomically (rank 0 only)."""
        if is_main():
            data = {"version": FORMAT_VERSION, "status": self.status, "stages": self.stages}
            atomic_write_text(self.path, json.dumps(data, indent=2) + "\n")
