"""Resume states of fit(): save/load round trip, fingerprint check, metrics clean-up, and an
interrupted + resumed fit that ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from mmdistill.data.loaders import EpochShuffleSampler
from mmdistill.errors import CheckpointError
from mmdistill.models.outputs import ModelOutput
from mmdistill.training.logging import MetricsLogger
from mmdistill.training.loop import fit
from mmdistill.training.optim import build_optimizer, cosine_with_warmup
from mmdistill.training.resume import (
    STATE_FILE,
    ResumeState,
    check_fingerprint,
    clear_resume_state,
    fit_fingerprint,
    load_resume_state,
    save_resume_state,
)
from mmdistill.training.runtime import seed_everything
from mmdistill.training.state_io import capture_rng, drop_stage_records, restore_rng
from mmdistill.training.steps import supervised_step

K, DIM = 3, 8


class Toy(nn.Module):
    """Batch dict in, ModelOutput out (``tasks`` adds a head: another architecture)."""

    def __init__(self, tasks: dict[str, int] | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(DIM, 16), nn.Tanh())
        self.head = nn.Linear(16, K)
        self.extra = nn.ModuleDict({t: nn.Linear(16, k) for t, k in (tasks or {}).items()})

    def forward(self, batch: dict) -> ModelOutput:
        z = self.body(batch["image"])
        return ModelOutput(logits=self.head(z), features={"image.pooled": z, "fused": z})


def samples(n: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(K, DIM, generator=torch.Generator().manual_seed(123)) * 2.0
    y = torch.randint(0, K, (n,), generator=g)
    x = centers[y] + 0.7 * torch.randn(n, DIM, generator=g)
    return [{"id": f"s{seed}-{i}", "image": x[i].view(1, 2, 4), "label": int(y[i])} for i in range(n)]


def collate(rows: list[dict]) -> dict:
    return {"id": [r["id"] for r in rows], "image": torch.stack([r["image"] for r in rows]),
            "label": torch.tensor([r["label"] for r in rows]),
            "present": {"image": torch.ones(len(rows), dtype=torch.bool)}}


def _loader(n: int, seed: int, *, shuffle: bool) -> DataLoader:
    data = samples(n, seed)
    sampler = EpochShuffleSampler(n, seed) if shuffle else None
    return DataLoader(data, batch_size=16, sampler=sampler, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def noisy_step(model, batch):
    """supervised_step plus noise from every RNG a real step may use (torch, NumPy, Python)."""
    batch = dict(batch, image=batch["image"] + 0.3 * torch.randn_like(batch["image"]))
    out = supervised_step()(model, batch)
    out["loss"] = out["loss"] * (1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random())
    return out


def _fit(model, tmp_path: Path, *, resume: bool, epochs: int = 4, checkpoint_fn=None, patience=None):
    logger = MetricsLogger(tmp_path / "metrics.jsonl", quiet=True)
    return fit(model, _loader(64, 1, shuffle=True), _loader(32, 2, shuffle=False), noisy_step, epochs=epochs,
               lr=1e-2, weight_decay=0.01, warmup_steps=2, patience=patience, logger=logger, stage="toy",
               progress=False, resume_dir=tmp_path / "resume", resume=resume, checkpoint_fn=checkpoint_fn)


def _comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "train/samples_per_s")} for r in history]


def _epochs(path: Path, stage: str = "toy") -> list[int]:
    return [r["epoch"] for r in map(json.loads, path.read_text().splitlines())
            if r["stage"] == stage and "val/accuracy" in r]


def test_interrupted_and_resumed_fit_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    seed_everything(0)
    straight = Toy()
    ref = _fit(straight, tmp_path / "a", resume=False)

    def interrupt(net, epoch, record):  # runs after epoch 3's record is logged, before its state is saved
        if epoch == 3:
            raise KeyboardInterrupt

    seed_everything(0)  # what every recipe does first: same start as the uninterrupted run
    with pytest.raises(KeyboardInterrupt):
        _fit(Toy(), tmp_path / "b", resume=False, checkpoint_fn=interrupt)
    assert json.loads((tmp_path / "b" / "resume" / STATE_FILE).read_text())["epoch"] == 2
    assert _epochs(tmp_path / "b" / "metrics.jsonl") == [1, 2, 3]

    # A new process: other initial weights, RNGs in another state. The resume state restores all.
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    resumed = Toy()
    out = _fit(resumed, tmp_path / "b", resume=True)

    assert _comparable(out.history) == _comparable(ref.history)
    assert (out.best_epoch, out.epochs_run) == (ref.best_epoch, ref.epochs_run)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    # Epoch 3 was logged before the interruption and again after: the file holds it once.
    assert _epochs(tmp_path / "b" / "metrics.jsonl") == [1, 2, 3, 4]


def test_resume_after_the_last_epoch_trains_nothing_and_restores_the_best(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Toy()
    ref = _fit(model, tmp_path, resume=False, epochs=3)  # fit keeps its last state; recipes delete it
    again = Toy()
    out = _fit(again, tmp_path, resume=True, epochs=3)
    assert out.epochs_run == 3 and out.best_epoch == ref.best_epoch
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    assert _epochs(tmp_path / "metrics.jsonl") == [1, 2, 3]


def test_resume_after_early_stopping_stays_stopped(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Toy()
    # The toy task is solved after one epoch (val accuracy 1.0), so patience 1 stops at epoch 2.
    ref = _fit(model, tmp_path, resume=False, epochs=6, patience=1)
    assert ref.stopped_early and ref.epochs_run == 2 and ref.best_epoch == 1
    again = Toy()
    out = _fit(again, tmp_path, resume=True, epochs=6, patience=1)
    assert out.stopped_early and out.epochs_run == 2 and out.best_epoch == 1
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    assert _epochs(tmp_path / "metrics.jsonl") == [1, 2]


def test_a_fresh_fit_discards_stale_state_and_other_settings_are_refused(tmp_path: Path, caplog) -> None:
    torch.manual_seed(0)
    _fit(Toy(), tmp_path, resume=False, epochs=2)
    with pytest.raises(CheckpointError, match=r"belongs to a different training \(epochs: saved 2, now 3\)"):
        _fit(Toy(), tmp_path, resume=True, epochs=3)
    with caplog.at_level("WARNING", logger="mmdistill.training.resume"):
        out = _fit(Toy(), tmp_path, resume=False, epochs=1)
    assert "toy: discarding the resume state" in caplog.text
    assert out.epochs_run == 1 and json.loads((tmp_path / "resume" / STATE_FILE).read_text())["epoch"] == 1
    assert _epochs(tmp_path / "metrics.jsonl") == [1]  # the earlier attempt's epochs are gone


def test_state_round_trip_restores_optimizer_scheduler_and_every_rng(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Toy()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    sched = cosine_with_warmup(opt, total_steps=10, warmup_steps=2)
    batch = collate(samples(8, 0))
    for _ in range(3):
        opt.zero_grad()
        supervised_step()(model, batch)["loss"].backward()
        opt.step()
        sched.step()
    gen = torch.Generator().manual_seed(11)
    gen.manual_seed(11)
    rng_tensors: dict[str, torch.Tensor] = {}
    rng = capture_rng([gen], rng_tensors)
    best = {k: v + 1 for k, v in model.state_dict().items()}
    state = ResumeState(epoch=3, model=model.state_dict(), best=best, optimizer=opt.state_dict(),
                        scheduler=sched.state_dict(), best_acc=float("nan"), best_epoch=1, bad_epochs=2,
                        history=[{"epoch": 1, "val/accuracy": float("nan")}], fingerprint={"lr": 0.01},
                        rng=rng, rng_tensors=rng_tensors)
    save_resume_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0003.safetensors", STATE_FILE]
    expected = (torch.rand(4), np.random.rand(3), random.random(), torch.rand(2, generator=gen))

    torch.manual_seed(1)  # scramble every RNG, then restore
    np.random.seed(1)
    random.seed(1)
    gen.manual_seed(1)
    loaded = load_resume_state(tmp_path)
    assert loaded is not None
    restore_rng(loaded.rng, loaded.rng_tensors, [gen])
    again = (torch.rand(4), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and torch.equal(expected[3], again[3])

    assert loaded.epoch == 3 and (loaded.best_epoch, loaded.bad_epochs) == (1, 2)
    assert np.isnan(loaded.best_acc) and np.isnan(loaded.history[0]["val/accuracy"])
    assert all(torch.equal(loaded.model[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(loaded.best[k], v) for k, v in best.items())  # type: ignore[index]
    assert loaded.scheduler == sched.state_dict()
    other = build_optimizer(Toy(), lr=1e-2, weight_decay=0.1)
    other.load_state_dict(loaded.optimizer)
    a, b = opt.state_dict(), other.state_dict()
    assert a["param_groups"] == b["param_groups"] and b["param_groups"][0]["betas"] == (0.9, 0.999)
    assert a["state"].keys() == b["state"].keys()
    for i, st in a["state"].items():
        assert all(torch.equal(st[k], b["state"][i][k]) for k in st)

    state.epoch = 4  # the next epoch replaces the tensor file; state.json names the new one
    save_resume_state(tmp_path, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0004.safetensors", STATE_FILE]
    assert clear_resume_state(tmp_path) and not tmp_path.exists() and load_resume_state(tmp_path) is None


def test_fingerprint_and_unreadable_state_errors_name_the_folder(tmp_path: Path) -> None:
    model = Toy()
    fp = fit_fingerprint(model, epochs=3, lr=0.01)
    state = ResumeState(epoch=1, model=model.state_dict(), best=None, optimizer={}, scheduler=None,
                        best_acc=0.5, best_epoch=1, bad_epochs=0, history=[], fingerprint=fp)
    check_fingerprint(state, fit_fingerprint(model, epochs=3, lr=0.01), tmp_path)  # same: fine
    with pytest.raises(CheckpointError, match="parameter shapes differ") as info:
        check_fingerprint(state, fit_fingerprint(Toy(tasks={"sign": 2}), epochs=3, lr=0.01), tmp_path)
    assert f"delete {tmp_path} to start this stage over" in str(info.value)
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"state.json: unreadable resume state"):
        load_resume_state(tmp_path)


def test_drop_stage_records_keeps_other_stages_and_drops_a_cut_off_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"stage": "teacher", "epoch": 3}, {"stage": "kd", "epoch": 1}, {"stage": "kd", "epoch": 2},
            {"stage": "kd", "epoch": None}, {"stage": "kd", "epoch": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"stage": "kd", "epo')
    assert drop_stage_records(path, "kd", 1) == 3  # epochs 2 and 3, and the partial line
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:2] + [rows[3]]
    assert drop_stage_records(path, "kd", 1) == 0 and drop_stage_records(tmp_path / "none", "kd", 0) == 0


def test_a_tampered_or_redirected_resume_state_is_refused(tmp_path: Path) -> None:
    model = Toy()
    state = ResumeState(epoch=2, model=model.state_dict(), best=None, optimizer={}, scheduler=None,
                        best_acc=0.5, best_epoch=1, bad_epochs=0, history=[], fingerprint={"lr": 0.01})
    save_resume_state(tmp_path, state)
    assert load_resume_state(tmp_path) is not None
    # the weights changed after they were written: the digest stored with them no longer matches
    tensors_file = tmp_path / "epoch-0002.safetensors"
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tensors_file), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    key = next(iter(tensors))
    tensors[key] = tensors[key] + 1
    save_file(tensors, str(tensors_file), metadata=meta)
    with pytest.raises(CheckpointError, match="do not match the sha256"):
        load_resume_state(tmp_path)
    # state.json may only name a tensor file of this folder, never a path elsewhere
    meta_json = json.loads((tmp_path / STATE_FILE).read_text())
    meta_json["tensors"] = "../elsewhere.safetensors"
    (tmp_path / STATE_FILE).write_text(json.dumps(meta_json))
    with pytest.raises(CheckpointError, match="not of the form epoch-NNNN.safetensors"):
        load_resume_state(tmp_path)
