"""MNIST MLP reproductions: teacher, student alone, MSE-logit and KL distillation (issue 3).

Two teacher/student pairs on the MNIST images of the built-in ``mmdigits`` dataset (784 flattened
pixels), each model an image-only ``MultimodalModel`` (``mlp`` encoder + ``concat`` fusion as the
last hidden layer + ``linear`` head), trained with mmdistill's ``fit`` and its distillation strategy:

- ``seed``: the seed documents' teacher 784-128-64-10 and student 784-64-10, T = 4.
- ``hinton``: Hinton et al. 2015 (sec. 3) teacher 784-1200-1200-10 (dropout 0.2 on the input and
  0.5 on each hidden layer, inputs jittered by up to 2 px) and student 784-800-800-10, T = 20.

Each student is trained alone (CE), with MSE-logit distillation (``0.1 CE + 0.9 mse_logits``) and
with KL distillation (``kd_ce``, ``alpha = 0.9``: ``0.1 CE + 0.9 T^2 KL``); every student of a seed
starts from the same initialization and sees the same batches. Reported: test errors out of the
1,000 MNIST test images, mean ± sd over seeds and the 95% t-interval.

Usage:
    .venv/bin/python benchmarks/mnist_mlp.py --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/mnist_mlp.py --reprint benchmarks/results/mnist_mlp.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from foundation import _cpu_model, mean_ci  # same statistics and machine description

from mmdistill.data.batch import Batch
from mmdistill.data.datasets.builtin import load_builtin
from mmdistill.distill.strategies.base import DistillStrategy, Term, distill_step
from mmdistill.models.builders import build_model, model_spec
from mmdistill.models.multimodal import MultimodalModel
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.loop import fit
from mmdistill.training.predict import evaluate
from mmdistill.training.steps import supervised_step

PAPER = {"teacher": 67, "student": 146, "kl": 74, "test_images": 10_000}
"""Hinton et al. 2015, sec. 3: test errors on the full MNIST test set (60k train, jitter, dropout)."""

PAIRS: dict[str, dict[str, Any]] = {
    # hidden = encoder widths; the concat fusion (Linear + ReLU of width `dim`) is the last hidden layer.
    "seed": {"temperature": 4.0,
             "teacher": {"hidden": [128], "dim": 64, "input_dropout": 0.0, "dropout": 0.0, "jitter": 0},
             "student": {"hidden": [], "dim": 64}},
    "hinton": {"temperature": 20.0,
               "teacher": {"hidden": [1200], "dim": 1200, "input_dropout": 0.2, "dropout": 0.5, "jitter": 2},
               "student": {"hidden": [800], "dim": 800}},
}
VARIANTS = ("student", "mse", "kl")
LABELS = {"teacher": "teacher", "student": "student alone", "mse": "student, MSE-logit", "kl": "student, KL"}
SETTINGS = {"batch_size": 100, "lr": 1e-3, "weight_decay": 0.0, "warmup": 0.05, "optimizer": "AdamW",
            "schedule": "linear warm-up 5% then cosine", "grad_clip": None, "ce_weight_distill": 0.1,
            "distill_weight": 0.9, "best_epoch": "highest val accuracy (500 MNIST val images)"}


def load_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The stored, undegraded 28x28 MNIST images of one split's MNIST rows, scaled to [0, 1].

    Split membership and labels come from :func:`load_builtin`; the pixels are the asset's original
    MNIST digits (``load_builtin``'s shifts, noise and heavy degradations are not applied), and the
    scikit-learn digits rows are left out.

    Shapes:
        returns images ``[N, 1, 28, 28]`` float32, labels ``[N]`` int64 and N ids.
    """
    rows = [r for r in load_builtin(split) if r.meta["image_source"] == "mnist"]
    with (resources.files("mmdistill") / "assets" / "mmdigits.npz").open("rb") as f, \
            np.load(f, allow_pickle=False) as z:
        idx = np.array([r.meta["image_index"] for r in rows])
        pixels, stored_labels = z["images"][idx], z["image_labels"][idx]
    labels = np.array([r.label for r in rows])
    assert (stored_labels == labels).all(), "asset image labels must match the samples' labels"
    images = torch.from_numpy(np.array(pixels, dtype=np.float32) / 255.0).unsqueeze(1)
    return images, torch.from_numpy(labels).long(), [r.id for r in rows]


class ImageBatches:
    """Image-only batches in the collate layout, reshuffled (and optionally jittered) every pass.

    Args:
        jitter: shift each image by a random whole number of pixels in ``[-jitter, jitter]`` on
            each axis (zeros fill in), a new draw every pass; 0 = no jitter.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, ids: list[str], batch_size: int, *,
                 shuffle: bool, jitter: int = 0, seed: int = 0) -> None:
        self.images, self.labels, self.ids = images, labels, ids
        self.batch_size, self.shuffle, self.jitter = batch_size, shuffle, jitter
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.ids) // self.batch_size)

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        j, (h, w) = self.jitter, x.shape[-2:]
        padded = F.pad(x, (j, j, j, j))
        offsets = torch.randint(0, 2 * j + 1, (x.shape[0], 2), generator=self.gen).tolist()
        return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.ids)
        order = torch.randperm(n, generator=self.gen) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            x = self.images.index_select(0, index)
            if self.jitter:
                x = self._shift(x)
            yield {"id": [self.ids[i] for i in index.tolist()], "label": self.labels.index_select(0, index),
                   "image": x, "present": {"image": torch.ones(len(index), dtype=torch.bool)}, "lengths": {}}


def mlp_model(
    hidden: list[int], dim: int, input_dropout: float = 0.0, dropout: float = 0.0
) -> MultimodalModel:
    """784-``hidden``-``dim``-10 as an image-only model; ``dropout`` on every hidden layer's output."""
    spec = model_spec(
        "student", modalities=["image"], num_classes=10, vocab_size=1,
        encoders={"image": {"name": "mlp", "kwargs": {"image_size": 28, "hidden": hidden,
                                                      "input_dropout": input_dropout, "dropout": 0.0}}},
        # Dropout on the encoder's output is the concat fusion's; on the fused vector, the head's.
        fusion={"name": "concat", "kwargs": {"dim": dim, "dropout": dropout if hidden else 0.0}},
        head={"name": "linear", "kwargs": {"dropout": dropout}},
    )
    return build_model(spec)


def train(model: torch.nn.Module, step: Any, data: dict[str, ImageBatches], epochs: int, stage: str) -> dict:
    """``fit`` then count test errors; returns the per-model record."""
    t0 = time.perf_counter()
    res = fit(model, data["train"], data["val"], step, epochs=epochs, lr=SETTINGS["lr"],
              weight_decay=SETTINGS["weight_decay"], warmup_steps=SETTINGS["warmup"], patience=None,
              grad_clip=None, logger=MetricsLogger(None, quiet=True), stage=stage, progress=False)
    _, preds = evaluate(model, data["test"], device="cpu")
    errors = int((preds.preds != preds.labels).sum())
    return {"errors": errors, "test_images": len(preds), "best_epoch": res.best_epoch,
            "val_accuracy": res.best_val_accuracy, "seconds": time.perf_counter() - t0}


def run_seed(seed: int, pairs: list[str], epochs: dict[str, int], splits: dict[str, tuple]) -> dict:
    """Train every model of ``pairs`` once with ``seed``."""
    out: dict[str, Any] = {"seed": seed}
    for pair in pairs:
        cfg = PAIRS[pair]
        t, s = cfg["teacher"], cfg["student"]
        loaders = {name: ImageBatches(*splits[name], SETTINGS["batch_size"], shuffle=name == "train",
                                      seed=seed) for name in ("val", "test")}
        torch.manual_seed(seed)
        teacher = mlp_model(t["hidden"], t["dim"], t["input_dropout"], t["dropout"])
        data = {**loaders, "train": ImageBatches(*splits["train"], SETTINGS["batch_size"], shuffle=True,
                                                 jitter=t["jitter"], seed=seed)}
        rec = {"teacher": train(teacher, supervised_step(), data, epochs["teacher"], f"{pair}-teacher")}
        terms = {"mse": ([Term("mse_logits", SETTINGS["distill_weight"])], SETTINGS["ce_weight_distill"]),
                 "kl": ([Term("kd_ce", 1.0, {"temperature": cfg["temperature"], "alpha": 0.9})], None)}
        for variant in VARIANTS:
            torch.manual_seed(seed + 1000)  # the same student initialization for the three variants
            student = mlp_model(s["hidden"], s["dim"])
            data = {**loaders, "train": ImageBatches(*splits["train"], SETTINGS["batch_size"], shuffle=True,
                                                     seed=seed + 1000)}
            if variant == "student":
                model, step = student, supervised_step()
            else:
                term_list, ce_weight = terms[variant]
                model = DistillStrategy(student, terms=term_list, teachers={"teacher": teacher},
                                        ce_weight=ce_weight, name=f"logit_kd-{variant}")
                step = distill_step
            rec[variant] = train(model, step, data, epochs["student"], f"{pair}-{variant}")
        rec["params"] = {"teacher": sum(p.numel() for p in teacher.parameters()),
                         "student": sum(p.numel() for p in student.parameters())}
        out[pair] = rec
        print(f"seed {seed} {pair}: " + ", ".join(f"{k} {rec[k]['errors']}" for k in ("teacher", *VARIANTS)),
              flush=True)
    return out


def _fmt(values: list[float], digits: int = 1) -> str:
    m, sd, ci = mean_ci(values)
    return f"{m:.{digits}f} ± {sd:.{digits}f} (95% CI ± {ci:.{digits}f})"


def report(result: dict) -> None:
    """Print the markdown table of docs/benchmarks.md from a results dict."""
    runs = result["runs"]
    n_test = runs[0][result["pairs"][0]]["teacher"]["test_images"]
    print(f"| pair | model | params | test errors of {n_test:,} over {len(runs)} seeds | test error % | "
          f"per seed | paper errors of {PAPER['test_images']:,} |")
    print("|---|---|---|---|---|---|---|")
    paper = {"teacher": PAPER["teacher"], "student": PAPER["student"], "mse": "-", "kl": PAPER["kl"]}
    for pair in result["pairs"]:
        for model in ("teacher", *VARIANTS):
            errors = [r[pair][model]["errors"] for r in runs]
            params = runs[0][pair]["params"]["teacher" if model == "teacher" else "student"]
            pct = [100.0 * e / n_test for e in errors]
            ref = paper[model] if pair == "hinton" else "-"
            print(f"| {pair} | {LABELS[model]} | {params:,} | {_fmt(errors)} | {_fmt(pct, 2)} | "
                  f"{' / '.join(map(str, errors))} | {ref} |")
    walls = [sum(r[p][m]["seconds"] for p in result["pairs"] for m in ("teacher", *VARIANTS)) for r in runs]
    print(f"\nepochs: teacher {result['epochs']['teacher']}, students {result['epochs']['student']}; "
          f"train/val/test MNIST images: {result['sizes']}; training+test time per seed (s): "
          f"{', '.join(f'{w:.0f}' for w in walls)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=["seed", "hinton"])
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--student-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mnist_mlp.json"))
    ap.add_argument("--reprint", type=Path, default=None, help="print the table again from a results JSON")
    args = ap.parse_args()
    if args.reprint is not None:
        report(json.loads(args.reprint.read_text()))
        return
    # One thread: on 2 cores shared with other jobs, 2 OpenMP threads spin-wait and run several times
    # slower than one for these small matrices (measured: 0.3 s vs 7.7 s per epoch of the seed teacher).
    torch.set_num_threads(args.threads)
    splits = {name: load_mnist(name) for name in ("train", "val", "test")}
    epochs = {"teacher": args.teacher_epochs, "student": args.student_epochs}
    t0 = time.perf_counter()
    runs = [run_seed(s, args.pairs, epochs, splits) for s in args.seeds]
    result = {"benchmark": "mnist_mlp", "date": dt.date.today().isoformat(),
              "machine": {"processor": _cpu_model(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "system": platform.system()},
              "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "seeds": args.seeds,
              "pairs": args.pairs, "pair_settings": {p: PAIRS[p] for p in args.pairs}, "settings": SETTINGS,
              "epochs": epochs, "sizes": {k: len(v[2]) for k, v in splits.items()},
              "data": "mmdigits MNIST rows only, stored undegraded 28x28 pixels / 255 (no shift/noise/heavy "
                      "degradation); scikit-learn digits excluded",
              "paper": PAPER, "wall_s": time.perf_counter() - t0, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    report(result)
    print(f"raw results: {args.out}")


if __name__ == "__main__":
    main()
