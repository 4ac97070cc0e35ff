"""The training loop on a tiny contract-following model and learnable synthetic data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mmdistill.data.batch import IGNORE_LABEL
from mmdistill.errors import ConfigError, DataError, MMDistillError
from mmdistill.models.outputs import ModelOutput
from mmdistill.training import predict as predict_module
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.loop import fit, train_one_epoch
from mmdistill.training.optim import build_optimizer, cosine_with_warmup
from mmdistill.training.predict import Predictions, evaluate, predict
from mmdistill.training.steps import masked_cross_entropy, supervised_step

K, DIM = 3, 8


class Toy(nn.Module):
    """Batch dict in, ModelOutput out; with ``tasks`` it adds heads named like the real model's."""

    def __init__(self, tasks: dict[str, int] | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(DIM, 16), nn.Tanh())
        self.head = nn.Linear(16, K)
        self.extra = nn.ModuleDict({t: nn.Linear(16, k) for t, k in (tasks or {}).items()})

    def forward(self, batch: dict) -> ModelOutput:
        z = self.body(batch["image"])
        logits = self.head(z)
        task_logits = {"label": logits, **{t: h(z) for t, h in self.extra.items()}} if self.extra else {}
        return ModelOutput(logits=logits, features={"image.pooled": z, "fused": z}, task_logits=task_logits)


def samples(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(K, DIM, generator=torch.Generator().manual_seed(123)) * 2.0
    y = torch.randint(0, K, (n,), generator=g)
    x = centers[y] + 0.7 * torch.randn(n, DIM, generator=g)
    # Second task: is the first feature positive? (learnable from the same input)
    return [{"id": f"s{seed}-{i}", "image": x[i].view(1, 2, 4), "label": int(y[i]),
             "tasks": {"sign": int(x[i, 0] > 0)}} for i in range(n)]


def collate(rows: list[dict]) -> dict:
    return {
        "id": [r["id"] for r in rows],
        "image": torch.stack([r["image"] for r in rows]),
        "label": torch.tensor([r["label"] for r in rows]),
        "present": {"image": torch.ones(len(rows), dtype=torch.bool)},
        "tasks": {"sign": torch.tensor([r["tasks"]["sign"] for r in rows])},
    }


def make_loader(n: int, seed: int, batch: int = 16, shuffle: bool = False) -> DataLoader:
    return DataLoader(samples(n, seed), batch_size=batch, shuffle=shuffle, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def test_masked_cross_entropy_ignores_rows_and_never_nans() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    labels = torch.tensor([0, IGNORE_LABEL, 2])
    expected = F.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    assert masked_cross_entropy(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    none = torch.full((3,), IGNORE_LABEL)
    assert masked_cross_entropy(logits, none).item() == 0.0  # torch's mean would be 0/0 = NaN


def test_supervised_step_single_task_matches_cross_entropy() -> None:
    torch.manual_seed(0)
    model, batch = Toy(), collate(samples(10, 1))
    out = supervised_step(label_smoothing=0.1)(model, batch)
    ref = F.cross_entropy(model(batch).logits, batch["label"], label_smoothing=0.1)
    assert set(out) == {"loss", "logits"}
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert out["logits"].shape == (10, K)


def test_supervised_step_multi_task_is_weighted_sum() -> None:
    torch.manual_seed(0)
    model, batch = Toy(tasks={"sign": 2}), collate(samples(10, 1))
    batch["tasks"]["sign"][:3] = IGNORE_LABEL  # unlabelled rows for one task
    out = supervised_step(task_weights={"label": 1.0, "sign": 0.5})(model, batch)
    mo = model(batch)
    l_label = F.cross_entropy(mo.logits, batch["label"])
    l_sign = F.cross_entropy(mo.task_logits["sign"], batch["tasks"]["sign"], ignore_index=IGNORE_LABEL)
    assert out["loss/label"].item() == pytest.approx(l_label.item(), rel=1e-6)
    assert out["loss/sign"].item() == pytest.approx(l_sign.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(l_label.item() + 0.5 * l_sign.item(), rel=1e-6)


def test_supervised_step_errors_name_the_task() -> None:
    model, batch = Toy(tasks={"sign": 2}), collate(samples(4, 1))
    with pytest.raises(ConfigError, match=r"\['colour'\].*heads for \['label', 'sign'\]"):
        supervised_step(task_weights={"colour": 1.0})(model, batch)
    del batch["tasks"]
    with pytest.raises(DataError, match="head for task 'sign' but the batch has no labels"):
        supervised_step()(model, batch)
    with pytest.raises(ConfigError, match="label_smoothing"):
        supervised_step(label_smoothing=1.0)


def test_train_one_epoch_means_scheduler_and_step_records(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, data = Toy(), make_loader(40, 1, batch=16)  # batches of 16, 16, 8
    seen: list[tuple[float, int]] = []
    base = supervised_step()

    def step(m: nn.Module, b: dict) -> dict:
        out = base(m, b)
        seen.append((out["loss"].item(), len(b["id"])))
        return {**out, "loss/double": 2 * out["loss"]}

    opt = build_optimizer(model, lr=1e-2, weight_decay=0.0)
    sched = cosine_with_warmup(opt, total_steps=3, warmup_steps=0)
    logger = MetricsLogger(tmp_path / "m.jsonl", quiet=True)
    stats = train_one_epoch(model, data, step, opt, sched, epoch=1, grad_clip=1.0, logger=logger,
                            progress=False, device="cpu", stage="s", log_every=2)
    weighted = sum(loss * n for loss, n in seen) / 40  # sample-weighted, not batch-weighted
    assert stats["loss"] == pytest.approx(weighted, rel=1e-6)
    assert stats["loss/double"] == pytest.approx(2 * weighted, rel=1e-6)
    assert stats["steps"] == 3 and sched.last_epoch == 3  # stepped once per optimizer step
    assert stats["lr"] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 2 / 3)))  # lr of step 3
    assert 0.0 <= stats["accuracy"] <= 1.0 and stats["grad_norm"] > 0 and stats["samples_per_s"] > 0
    records = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["epoch"], r["step"]) for r in records] == [("s", 1, 2)]
    assert records[0]["train/loss"] == pytest.approx(seen[1][0])


def test_non_finite_loss_stops_with_advice() -> None:
    model = Toy()
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.0)

    def bad(m: nn.Module, b: dict) -> dict:
        out = supervised_step()(m, b)
        return {**out, "loss": out["loss"] * float("nan")}

    with pytest.raises(MMDistillError, match="diverged: loss is nan at epoch 1, step 1; lower the learning"):
        train_one_epoch(model, make_loader(8, 1), bad, opt, None, epoch=1, grad_clip=None,
                        logger=MetricsLogger(None, quiet=True), progress=False, device="cpu")


def test_predict_collects_everything_in_order_and_restores_mode() -> None:
    torch.manual_seed(0)
    model = Toy(tasks={"sign": 2}).train()
    data = make_loader(21, 3, batch=8)
    p = predict(model, data, device="cpu")
    assert model.training  # restored
    assert p.ids == [f"s3-{i}" for i in range(21)]
    assert p.logits.shape == (21, K) and p.labels.shape == (21,)
    assert set(p.task_logits) == {"label", "sign"} and p.task_logits["sign"].shape == (21, 2)
    assert torch.equal(p.task_labels["sign"], collate(samples(21, 3))["tasks"]["sign"])
    with torch.no_grad():
        ref = model.eval()(collate(samples(21, 3))).logits
    torch.testing.assert_close(p.logits, ref)
    assert torch.equal(p.preds, ref.argmax(-1))
    with pytest.raises(DataError, match="no batches"):
        predict(model, [], device="cpu")


def test_gather_interleaves_ranks_and_drops_sampler_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    # 5 rows over 2 ranks: DistributedSampler pads to 6 with row 0 again; rank r gets r, r+2, r+4.
    def part(rows: list[int]) -> Predictions:
        return Predictions(
            logits=torch.tensor([[float(r), 0.0] for r in rows]),
            labels=torch.tensor(rows),
            ids=[f"x{r}" for r in rows],
            task_logits={"t": torch.tensor([[float(r)] for r in rows])},
            task_labels={"t": torch.tensor(rows)},
        )

    parts = [part([0, 2, 4]), part([1, 3, 0])]
    monkeypatch.setattr(predict_module, "all_gather_object", lambda obj: parts)
    out = predict_module._gather_predictions(parts[0])
    assert out.ids == ["x0", "x1", "x2", "x3", "x4"]
    assert out.labels.tolist() == [0, 1, 2, 3, 4]
    assert out.logits[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert out.task_labels["t"].tolist() == [0, 1, 2, 3, 4]


def test_fit_learns_stops_early_and_restores_best_weights(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    model = Toy()
    snapshots: dict[int, dict] = {}

    def checkpoint(m: nn.Module, epoch: int, record: dict) -> None:
        snapshots[epoch] = {k: v.clone() for k, v in m.state_dict().items()}
        assert "val/accuracy" in record and "is_best" in record

    logger = MetricsLogger(tmp_path, stage="unused-default")
    result = fit(model, make_loader(96, 1, shuffle=True), make_loader(60, 2), supervised_step(), epochs=30,
                 lr=1e-2, weight_decay=0.01, warmup_steps=0.1, patience=2, logger=logger, stage="teacher",
                 progress=False, checkpoint_fn=checkpoint, log_every=0)
    # Separable clusters: perfect validation accuracy is reached, cannot be beaten, so it stops.
    assert result.best_val_accuracy == 1.0
    assert result.stopped_early and result.epochs_run == result.best_epoch + 2 < 30
    assert len(result.history) == result.epochs_run == len(snapshots)
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    for k, v in model.state_dict().items():  # the best epoch's weights, not the last epoch's
        assert torch.equal(v, snapshots[result.best_epoch][k])
    metrics, _ = evaluate(model, make_loader(60, 2), device="cpu")
    assert metrics["accuracy"] == result.best_val_accuracy

    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, result.epochs_run + 1))
    assert {r["stage"] for r in records} == {"teacher"}
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr", "seconds"} <= set(records[0])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"teacher epoch 1/30  train loss {records[0]['train/loss']:.4f}  val loss")
    assert "best epoch" in printed[-1]


def test_fit_multi_task_logs_each_term(tmp_path: Path) -> None:
    torch.manual_seed(0)
    result = fit(Toy(tasks={"sign": 2}), make_loader(64, 1), make_loader(32, 2),
                 supervised_step(task_weights={"label": 1.0, "sign": 0.5}), epochs=2, lr=1e-2,
                 weight_decay=0.0, warmup_steps=0, patience=None, logger=MetricsLogger(None, quiet=True),
                 stage="mt", progress=False)
    h = result.history[-1]
    assert {"train/loss/label", "train/loss/sign", "val/accuracy/sign"} <= set(h)
    assert not result.stopped_early and result.epochs_run == 2


def test_fit_without_validation_keeps_last_epoch() -> None:
    result = fit(Toy(), make_loader(32, 1), None, supervised_step(), epochs=2, lr=1e-2, weight_decay=0.0,
                 warmup_steps=0, patience=1, logger=MetricsLogger(None, quiet=True), stage="x",
                 progress=False)
    assert result.best_epoch == 2 and math.isnan(result.best_val_accuracy) and not result.stopped_early


def test_fit_rejects_bad_settings_naming_the_key() -> None:
    args = dict(lr=1e-3, weight_decay=0.0, warmup_steps=0, logger=MetricsLogger(None, quiet=True),
                stage="teacher", progress=False)
    with pytest.raises(ConfigError, match="teacher.epochs must be >= 1, got 0"):
        fit(Toy(), make_loader(8, 1), None, supervised_step(), epochs=0, patience=None, **args)
    with pytest.raises(ConfigError, match="teacher.patience must be >= 1"):
        fit(Toy(), make_loader(8, 1), None, supervised_step(), epochs=1, patience=0, **args)
    frozen = Toy().requires_grad_(False)
    with pytest.raises(ConfigError, match="Toy has no trainable parameters"):
        fit(frozen, make_loader(8, 1), None, supervised_step(), epochs=1, patience=None, **args)
