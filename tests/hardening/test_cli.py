"""Bad inputs through the real CLI: exit code 2 and a message naming the place, never a traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _corpus import GOOD, jsonl, laughs
from typer.testing import CliRunner

from mmdistill.cli.main import app, main

runner = CliRunner()


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``mmdistill ARGS`` in this process through the console entry point (which maps errors to exit 2).

    ``run`` reconfigures the root logger; it is restored afterwards so later tests see pytest's set-up.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as info:
            main(args)
    finally:
        root.handlers[:], root.level = handlers, level
    return int(info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    "text, piece",
    [
        (
            "seed: !!python/object/apply:os.system ['touch {marker}']\n",
            "YAML tag '!!python/object/apply:os.system'",
        ),
        (
            laughs(7),
            "'billion laughs' bomb?",
        ),
        ("? [a, b]\n: 1\n", ":1:3: found unhashable key"),
        ("seed: " + "[" * 3000 + "\n", "unreadable YAML (nested too deeply"),
        (
            "data: {batch_size: 0, on_error: ignore}\n",
            "data.on_error: must be one of 'raise' or 'skip', got 'ignore'",
        ),
    ],
)
def test_validate_exits_2_naming_the_problem(tmp_path: Path, text: str, piece: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace("{marker}", str(marker)))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"INVALID: {path} (") and piece in result.stderr, result.stderr
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not marker.exists()


def manifest_config(ds: Path, rows: list, *, on_error: str = "raise") -> Path:
    jsonl(ds, rows)
    cfg = ds / "config.yaml"
    cfg.write_text(
        f"name: bad\noutput_dir: {ds / 'runs'}\ndata:\n  source: manifest\n  manifest: m.jsonl\n"
        f"  modalities: [image, text]\n  on_error: {on_error}\nlogging: {{progress: false}}\n"
    )
    return cfg


def test_run_with_a_bad_manifest_row_exits_2_naming_file_and_row(
    ds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = manifest_config(
        ds, [GOOD, {"id": "x", "image": "../../etc/passwd", "label": "a", "split": "train"}]
    )
    code, err = run_main(["run", str(cfg)], capsys)
    assert code == 2 and "Traceback" not in err
    assert (
        f"error: {ds / 'm.jsonl'}, row 2: path outside root: image path '../../etc/passwd' points outside"
        in err
    )
    assert "or set `data.on_error: skip` to skip such rows" in err


def test_run_when_every_row_is_skipped_exits_2_with_the_counts(
    ds: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = manifest_config(
        ds, [{"image": "img/gone.png", "label": "a", "split": "train"}, "not json"], on_error="skip"
    )
    code, err = run_main(["run", str(cfg)], capsys)
    assert code == 2 and "Traceback" not in err
    assert "no usable rows: all 2 rows were skipped (1 missing file, 1 malformed row)" in err


def test_console_script_prints_no_traceback(ds: Path) -> None:
    """The installed entry point in a fresh process: exit 2, one clear message on stderr."""
    (ds / "m.csv").write_bytes(b"id,text,label,split\ng,ok,a,train\nx,caf\xe9,a,train\n")
    cfg = ds / "config.yaml"
    cfg.write_text(
        f"name: bad\noutput_dir: {ds / 'runs'}\ndata: {{source: manifest, manifest: m.csv, "
        "modalities: [text]}\nlogging: {progress: false}\n"
    )
    env = {**os.environ, "COLUMNS": "300"}
    proc = subprocess.run(
        [sys.executable, "-m", "mmdistill.cli.main", "run", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"error: {ds / 'm.csv'}: the manifest is not UTF-8 (byte 0xe9 at line 3" in proc.stderr
