"""Worker for test_distributed.py: trains a toy model with ``fit`` and writes results JSON.

Run under ``torchrun --standalone --nproc_per_node=2`` (DDP, per-rank batch = global / 2,
DistributedSampler without shuffling) or as a plain script (one process, global batch). Both see
the same batches in the same order, so their numbers should agree up to float summation order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from mmdistill.models.outputs import ModelOutput
from mmdistill.training.distributed import cleanup, get_dist_info, init_distributed, unwrap
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.loop import fit
from mmdistill.training.predict import predict
from mmdistill.training.runtime import seed_everything, set_threads
from mmdistill.training.steps import supervised_step

NUM_CLASSES, DIM = 4, 16
GLOBAL_BATCH = 32


class ToyModel(nn.Module):
    """Follows the model contract: batch dict in, ModelOutput out. No BatchNorm, no dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(DIM, 32), nn.GELU(), nn.LayerNorm(32))
        self.head = nn.Linear(32, NUM_CLASSES)

    def forward(self, batch: dict) -> ModelOutput:
        fused = self.body(batch["image"])
        return ModelOutput(logits=self.head(fused), features={"image.pooled": fused, "fused": fused})


def make_samples(n: int, seed: int, prefix: str) -> list[dict]:
    """Noisy Gaussian clusters, one per class: learnable, but not to 100%."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(NUM_CLASSES, DIM, generator=torch.Generator().manual_seed(0)) * 0.45
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = centers[labels] + torch.randn(n, DIM, generator=g)
    return [{"id": f"{prefix}{i}", "image": x[i].view(1, 4, 4), "label": int(labels[i])} for i in range(n)]


def collate(samples: list[dict]) -> dict:
    return {
        "id": [s["id"] for s in samples],
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples]),
        "present": {"image": torch.ones(len(samples), dtype=torch.bool)},
    }


def loader(samples: list[dict], batch: int, distributed: bool) -> DataLoader:
    sampler = DistributedSampler(samples, shuffle=False) if distributed else None
    return DataLoader(samples, batch_size=batch, shuffle=False, sampler=sampler, collate_fn=collate)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    set_threads(1)
    info = init_distributed()
    try:
        seed_everything(0)
        model = ToyModel()
        per_rank = GLOBAL_BATCH // info.world_size
        train = loader(make_samples(512, 1, "t"), per_rank, info.enabled)
        # 201 rows: DistributedSampler pads to 202, so predict must drop one duplicate by id.
        val = loader(make_samples(201, 2, "v"), 50, info.enabled)
        args.out.mkdir(parents=True, exist_ok=True)
        logger = MetricsLogger(args.out / "metrics.jsonl", quiet=True)
        result = fit(
            model, train, val, supervised_step(), epochs=args.epochs, lr=3e-3, weight_decay=0.01,
            warmup_steps=0.1, patience=2, grad_clip=1.0, logger=logger, stage="toy", progress=False,
            log_every=0,
        )
        preds = predict(model, val, device="cpu")
        checksum = float(sum(p.detach().double().sum() for p in unwrap(model).parameters()))
        out = {
            "rank": info.rank,
            "world_size": info.world_size,
            "backend": info.backend,
            "best_epoch": result.best_epoch,
            "best_val_accuracy": result.best_val_accuracy,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "train_loss": [h["train/loss"] for h in result.history],
            "val_loss": [h["val/loss"] for h in result.history],
            "val_accuracy": [h["val/accuracy"] for h in result.history],
            "pred_ids": preds.ids,
            "preds": preds.preds.tolist(),
            "param_checksum": checksum,
        }
        (args.out / f"result_rank{info.rank}.json").write_text(json.dumps(out))
    finally:
        cleanup()
    assert get_dist_info().enabled is False


if __name__ == "__main__":
    main()
