"""Pretrained-teacher check: encoder speed and linear probes on the built-in dataset's frozen embeddings.

Embeds every record of ``mmdigits`` (train, val, test) once with the two offline pretrained
encoders of ``mmdistill.teachers`` (text: all-MiniLM-L6-v2, 384-d; audio: Google's speech-embedding
network, 96-d, mean over 76-frame windows), through the library's embedding store, timing the
cold build. Then trains a logistic regression (torch, full-batch L-BFGS on standardized features,
L2 strength picked on the val split) per feature set on the train split and reports accuracy on
the test split, whose voices were never heard in training (flite voices: an unseen engine too).
Baseline: the mean and standard deviation over time of the student's own 40-band log-mel.

Usage:
    .venv/bin/python benchmarks/pretrained_probe.py [--threads 1]
        [--out benchmarks/results/pretrained_probe.json]

Needs ``pip install 'mmdistill[pretrained-text,pretrained-audio]'``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmdistill.data.datasets.builtin import load_builtin
from mmdistill.data.records import SPLITS, RawSample
from mmdistill.data.transforms.audio import LogMel
from mmdistill.teachers import embedding_store
from mmdistill.teachers.spec import build_encoder

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, l2: float,
               classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: minimize CE(xW + b, y) + l2 * |W|^2 with L-BFGS."""
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe(feats: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
          subsets: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Standardize on train, pick L2 on val, report test accuracy overall and per subset."""
    mu, sd = feats["train"].mean(0), feats["train"].std(0).clamp_min(1e-6)
    z = {s: (f - mu) / sd for s, f in feats.items()}

    def acc(w: torch.Tensor, b: torch.Tensor, split: str, mask: torch.Tensor | None = None) -> float:
        pred = (z[split] @ w + b).argmax(1)
        ok = pred == labels[split]
        return float(ok[mask].float().mean() if mask is not None else ok.float().mean())

    val = {l2: acc(*fit_logreg(z["train"], labels["train"], l2), "val") for l2 in L2_GRID}
    best = max(val, key=val.get)
    w, b = fit_logreg(z["train"], labels["train"], best)
    return {"dim": int(feats["train"].shape[1]), "l2": best, "val_accuracy": val[best],
            "test_accuracy": acc(w, b, "test"),
            "test_subsets": {name: acc(w, b, "test", m) for name, m in subsets.items()}}


def mel_stats(records: list[RawSample]) -> torch.Tensor:
    """Mean and std over time of the student's default log-mel (40 bands, 1 s): ``[N, 80]``."""
    mels = LogMel().batch([torch.from_numpy(r.audio) for r in records])
    return torch.stack([torch.cat([m.mean(1), m.std(1)]) for m in mels])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pretrained_probe.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]  # the machine is shared: timings depend on what else runs
    t0 = time.perf_counter()
    splits = {s: load_builtin(s) for s in SPLITS}
    records = [r for s in SPLITS for r in splits[s]]
    assert all(r.audio is not None and r.text is not None for r in records)
    rates = sorted({r.sample_rate for r in records})
    encoders = {"text": build_encoder("text", {"name": "minilm"}),
                "audio": build_encoder("audio", {"name": "speech_embedding",
                                                 "kwargs": {"threads": args.threads}})}
    timing, emb = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for m, enc in encoders.items():
            start = time.perf_counter()
            store = embedding_store(Path(tmp), enc, records, batch_size=64, progress=False)
            seconds = time.perf_counter() - start
            timing[m] = {"records": len(records), "seconds": seconds,
                         "ms_per_sample": 1000 * seconds / len(records)}
            emb[m] = {s: store.lookup([r.id for r in splits[s]])[f"{m}.embedding"] for s in SPLITS}
    start = time.perf_counter()
    mel = {s: mel_stats(splits[s]) for s in SPLITS}
    timing["mel_stats"] = {"records": len(records), "seconds": time.perf_counter() - start}
    labels = {s: torch.tensor([r.label for r in splits[s]]) for s in SPLITS}
    test = splits["test"]
    subsets = {
        "flite (unseen engine)": torch.tensor([r.meta["engine"] == "flite" for r in test]),
        "espeak-ng (unseen voices)": torch.tensor([r.meta["engine"] == "espeak-ng" for r in test]),
        "audio not heavily degraded": torch.tensor(["audio" not in r.meta["heavy"] for r in test]),
        "text not heavily degraded": torch.tensor(["text" not in r.meta["heavy"] for r in test]),
    }
    feature_sets = {
        "audio: speech_embedding (96-d mean)": emb["audio"],
        "audio: log-mel mean+std (80-d, baseline)": mel,
        "text: minilm (384-d)": emb["text"],
        "text + audio: minilm + speech_embedding": {s: torch.cat([emb["text"][s], emb["audio"][s]], 1)
                                                    for s in SPLITS},
    }
    probes = {name: probe(f, labels, subsets) for name, f in feature_sets.items()}
    result = {
        "benchmark": "pretrained_probe", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "threads": args.threads,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu": platform.processor()},
        "data": {"sizes": {s: len(v) for s, v in splits.items()}, "sample_rates": rates},
        "timing": timing, "probes": probes, "wall_s": time.perf_counter() - t0,
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0], "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| features | dim | test acc | {' | '.join(subsets)} |")
    print(f"|---|---|---|{'---|' * len(subsets)}")
    for name, p in probes.items():
        cols = " | ".join(f"{v:.3f}" for v in p["test_subsets"].values())
        print(f"| {name} | {p['dim']} | {p['test_accuracy']:.3f} | {cols} |")
    for m in ("text", "audio"):
        print(f"{m} encoder: {timing[m]['ms_per_sample']:.2f} ms/sample ({timing[m]['records']} records, "
              f"{args.threads} threads, cold embedding-store build)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
