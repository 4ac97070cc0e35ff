"""The whole mmdistill pipeline from Python: what `mmdistill run CONFIG key=value ...` does.

    python examples/run_pipeline.py                              # the demo (packaged default.yaml)
    python examples/run_pipeline.py smoke data.limit=128 --output-dir /tmp/runs
    python examples/run_pipeline.py my-data/config.yaml teacher.train.epochs=3

Loads and validates the config (every problem at once), runs every stage of ``stages`` into
OUTPUT_DIR/NAME and prints the evaluation summary. Continue an interrupted run with
``run_pipeline(cfg, run_dir, resume=True)``, where ``cfg`` is loaded from the run folder's
``config.resolved.yaml`` (what ``mmdistill run --resume RUN_DIR`` does).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mmdistill.config import load_config
from mmdistill.recipes.evaluate import format_summary
from mmdistill.recipes.pipeline import run_pipeline


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=None, help="YAML file or packaged name (default: demo)")
    parser.add_argument("overrides", nargs="*", help="dotted KEY=VALUE overrides, e.g. data.limit=128")
    parser.add_argument("--output-dir", default=None, help="parent folder of run folders")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.config is not None and "=" in args.config and not Path(args.config).exists():
        overrides.insert(0, args.config)  # only overrides given: the demo config
        args.config = None
    if args.output_dir is not None:
        overrides.append(f"output_dir='{args.output_dir}'")

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, overrides)  # raises ConfigError listing every problem
    run_dir = Path(cfg.output_dir) / cfg.name
    result = run_pipeline(cfg, run_dir)
    print(format_summary(result["summary"]))
    print(f"done in {result['wall_s']:.1f} s; results are in {run_dir.resolve()}")
    return result


if __name__ == "__main__":
    main()
