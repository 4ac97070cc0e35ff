"""Test-only crash points: ``MMDISTILL_TEST_KILL_AT=<point>`` makes the process SIGKILL itself there.

Used by ``tests/integration/test_resume.py`` and ``tests/integration/test_kill_resume.py`` to
interrupt a real ``mmdistill run`` at an exact place and check that ``--resume`` finishes it with
the numbers of an uninterrupted run. Never set it otherwise. Torch-free, so any module can call it.

Points (``<stage>``: a training's stage name in ``metrics.jsonl``, ``teacher``, ``student-kd``, ...):

- ``<stage>:<epoch>:logged``: after epoch ``<epoch>``'s metrics record, before its resume state;
- ``<stage>:<epoch>:saved``: after the epoch's resume state is written;
- ``mark:<group>:<model>``: a model of pipeline stage ``<group>`` is saved, ``progress.json`` does
  not record it yet (``mark:<group>:*``: the whole stage finished, not yet recorded);
- ``cache:outputs``: the teacher cache's arrays are written, its ``meta.json`` and rename are not;
- ``export:<variant>:onnx``: the variant's float32 ONNX file and sidecar are written, nothing else;
- ``evaluate:<model>``: ``eval/<model>.json`` is written, the next model and the summary are not;
- ``report:results``: ``results.json`` is written, ``report.md`` and ``report.html`` are not.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

KILL_ENV = "MMDISTILL_TEST_KILL_AT"


def maybe_test_kill_at(point: str) -> None:
    """SIGKILL this process if :data:`KILL_ENV` is ``point`` (test-only hook; see the module doc)."""
    if os.environ.get(KILL_ENV) == point:
        log.warning("%s=%s: killing this process (test hook)", KILL_ENV, point)
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
