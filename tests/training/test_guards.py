"""A non-finite loss stops fit() at once, names stage/epoch/step/term/batch ids, and keeps the last
good resume state on disk untouched (training/guards.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from mmdistill.errors import MMDistillError, NonFiniteLossError
from mmdistill.models.outputs import ModelOutput
from mmdistill.training import guards
from mmdistill.training.guards import StepPlace, check_step, loss_entries
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.loop import fit
from mmdistill.training.resume import STATE_FILE, load_resume_state
from mmdistill.training.steps import supervised_step

K, DIM, BATCH = 3, 8, 4


class Poisonable(nn.Module):
    """Linear classifier whose logits turn NaN for any batch holding the sample id ``poison``."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(DIM, K)

    def forward(self, batch: dict) -> ModelOutput:
        logits = self.head(batch["image"].flatten(1))
        if "poison" in batch["id"]:
            logits = logits * float("nan")
        return ModelOutput(logits=logits, features={"fused": logits})


def rows(n: int, poison_at: int | None = None) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, DIM, generator=g), torch.randint(0, K, (n,), generator=g)
    return [
        {"id": "poison" if i == poison_at else f"r{i}", "image": x[i], "label": int(y[i])} for i in range(n)
    ]


def collate(batch: list[dict]) -> dict:
    return {
        "id": [r["id"] for r in batch],
        "image": torch.stack([r["image"] for r in batch]),
        "label": torch.tensor([r["label"] for r in batch]),
        "present": {"image": torch.ones(len(batch), dtype=torch.bool)},
    }


def loader(data: list[dict]) -> DataLoader:
    return DataLoader(data, batch_size=BATCH, shuffle=False, collate_fn=collate)


def run_fit(
    train: DataLoader, step, resume_dir: Path | None = None, *, model: nn.Module | None = None,
    epochs: int = 3, stage: str = "student-kd", **kw,
) -> None:
    torch.manual_seed(0)
    fit(
        model if model is not None else Poisonable(),
        train,
        None,
        step,
        epochs=epochs,
        lr=1e-2,
        weight_decay=0.0,
        warmup_steps=0,
        patience=None,
        logger=MetricsLogger(None, quiet=True),
        stage=stage,
        progress=False,
        resume_dir=resume_dir,
        **kw,
    )


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_nan_term_at_a_known_step_stops_with_everything_named_and_keeps_the_last_state(
    tmp_path: Path,
) -> None:
    resume = tmp_path / "resume"
    base = supervised_step()
    calls = {"n": 0}
    snapshot: dict[str, str] = {}

    def step(model: nn.Module, batch: dict) -> dict:
        calls["n"] += 1
        out = base(model, batch)
        if calls["n"] == 3:  # epoch 1 has 2 steps: the state after epoch 1 is on disk now
            snapshot.update(digest(resume))
        kd = out["loss"] * (float("nan") if calls["n"] == 4 else 0.5)  # epoch 2, step 2
        return {**out, "loss": out["loss"] + kd, "loss/ce": out["loss"], "loss/kd": kd}

    with pytest.raises(NonFiniteLossError) as info:
        run_fit(loader(rows(8)), step, resume)
    err = info.value
    assert (err.stage, err.epoch, err.step, err.global_step) == ("student-kd", 2, 2, 4)
    assert set(err.terms) == {"loss", "loss/kd"} and err.batch_ids == ["r4", "r5", "r6", "r7"]
    assert err.last_good == str(resume / STATE_FILE)
    msg = str(err)
    assert msg.startswith("student-kd: training diverged: loss is nan at epoch 2, step 2; lower the learning")
    assert "Non-finite: loss=nan, loss/kd=nan (finite: loss/ce=" in msg
    assert "step 4 of the stage; batch ids: ['r4', 'r5', 'r6', 'r7']" in msg
    assert f"after epoch 1, is kept untouched in {resume}" in msg
    assert calls["n"] == 4  # stopped at once: no further step ran
    assert snapshot and digest(resume) == snapshot  # byte for byte what epoch 1 wrote
    state = load_resume_state(resume)
    assert state is not None and state.epoch == 1
    assert all(torch.isfinite(v).all() for v in state.model.values())


def test_model_producing_nan_names_the_poisoned_batch_and_no_state_before_epoch_1(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError) as info:
        run_fit(loader(rows(8, poison_at=5)), supervised_step(), tmp_path / "resume")
    err = info.value
    assert (err.epoch, err.step) == (1, 2) and "poison" in err.batch_ids
    assert "batch ids: ['r4', 'poison', 'r6', 'r7']" in str(err)
    assert err.last_good is None and "No epoch had completed, so" in str(err)
    assert not (tmp_path / "resume" / STATE_FILE).exists()


def test_nan_gradient_with_a_finite_loss_stops_before_the_optimizer_step() -> None:
    base = supervised_step()
    seen: list[torch.Tensor] = []

    def step(model: nn.Module, batch: dict) -> dict:
        seen.append(model.head.weight.detach().clone())
        out = base(model, batch)
        # sqrt'(0) = inf: a finite loss (0 added) whose gradient is NaN.
        return {**out, "loss": out["loss"] + (model.head.weight.sum() * 0).abs().sqrt()}

    model = Poisonable()
    with pytest.raises(
        NonFiniteLossError,
        match=r"the gradient norm is nan although the loss, [0-9.]+, is "
        r"finite at epoch 1, step 1",
    ) as info:
        run_fit(loader(rows(8)), step, model=model, epochs=1, stage="s", grad_clip=1.0)
    assert set(info.value.terms) == {"grad_norm"}
    assert "No resume state is kept" in str(info.value)
    assert torch.equal(model.head.weight, seen[0])  # the optimizer never stepped


def test_inf_term_alone_is_named_even_when_the_total_is_finite() -> None:
    place = StepPlace("teacher", 3, 7, 27, 1e-3, ["a", "b"])
    out = {
        "loss": torch.tensor(1.5),
        "loss/ce": torch.tensor(1.5),
        "loss/aux": torch.tensor(float("inf")),
        "logits": torch.zeros(2, K),
    }
    with pytest.raises(
        NonFiniteLossError,
        match=r"^teacher: training diverged: loss term loss/aux is inf "
        r"\(the total loss is 1.5\) at epoch 3, step 7",
    ):
        check_step(out, place)
    assert loss_entries(out) == {"loss": 1.5, "loss/ce": 1.5, "loss/aux": float("inf")}
    assert check_step({"loss": torch.tensor(2.0)}, place) == {"loss": 2.0}
    assert issubclass(NonFiniteLossError, MMDistillError)  # the CLI prints it without a traceback


def test_long_id_lists_are_cut_in_the_message_but_kept_on_the_error() -> None:
    ids = [f"id{i}" for i in range(50)]
    with pytest.raises(NonFiniteLossError) as info:
        check_step({"loss": torch.tensor(float("nan"))}, StepPlace(None, 1, 1, 1, 0.1, ids))
    assert info.value.batch_ids == ids and "... (50 in all)" in str(info.value)
    assert str(info.value).startswith("training diverged: loss is nan")


def test_under_ddp_a_healthy_rank_stops_at_the_same_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guards, "is_distributed", lambda: True)
    monkeypatch.setattr(guards, "rank", lambda: 1)
    monkeypatch.setattr(guards, "all_reduce_sum", lambda t: t + 1.0)  # another rank reports a bad value
    with pytest.raises(
        NonFiniteLossError, match=r"diverged on another rank at epoch 2, step 5; this rank \(1\)"
    ):
        check_step({"loss": torch.tensor(0.3)}, StepPlace("s", 2, 5, 9, 0.1, ["x"]))
    monkeypatch.setattr(guards, "all_reduce_sum", lambda t: t)  # nobody did: training goes on
    assert check_step({"loss": torch.tensor(0.3)}, StepPlace("s", 2, 5, 9, 0.1, ["x"])) == {
        "loss": pytest.approx(0.3)
    }
