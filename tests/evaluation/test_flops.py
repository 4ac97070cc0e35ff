"""MAC counting: hand-computed Linear/Conv, analytic LSTM/GRU (never double-counted), branches."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from mmdistill.evaluation.flops import count_macs, default_branches, rnn_macs
from mmdistill.models.builders import build_model, model_spec


def test_linear_and_conv2d_match_hand_counts() -> None:
    # Linear(5, 7) on 4 rows: 4 * 5 * 7 multiply-adds; the bias is not a MAC.
    rep = count_macs(nn.Linear(5, 7), torch.randn(4, 5))
    assert rep.total == 140 and rep.by_op == {"matmul": 140} and rep.batch_size == 4
    # Conv2d(3 -> 8, 3x3, same padding) on [2, 3, 10, 10]: every output (2*8*10*10) costs 3*3*3 MACs.
    rep = count_macs(nn.Conv2d(3, 8, 3, padding=1), torch.randn(2, 3, 10, 10))
    assert rep.total == 2 * 8 * 10 * 10 * 27 == 43_200 and rep.by_op == {"conv": 43_200}
    assert rep.per_sample == pytest.approx(21_600)


def test_lstm_matches_analytic_formula_per_layer_and_direction() -> None:
    lstm = nn.LSTM(12, 24, num_layers=2, bidirectional=True, batch_first=True)
    rep = count_macs(lstm, torch.randn(3, 7, 12))
    steps = 3 * 7
    layer0 = 2 * 4 * 24 * (12 + 24)  # two directions, 4 gates, input + recurrent weights
    layer1 = 2 * 4 * 24 * (2 * 24 + 24)  # the second layer reads both directions
    assert rep.total == steps * (layer0 + layer1) == 435_456
    assert rep.by_op == {"lstm": rep.total} and rep.rnn_steps == steps * 2 * 2
    assert rnn_macs(lstm, steps) == rep.total


def test_packed_lstm_counts_only_real_steps_once() -> None:
    """A packed LSTM runs torch's per-step mm fallback, which the counter sees: replaced, not added."""
    lstm = nn.LSTM(12, 24, batch_first=True)
    x = torch.randn(3, 7, 12)
    packed = pack_padded_sequence(x, torch.tensor([7, 4, 2]), batch_first=True)
    rep = count_macs(lstm, (packed,))
    assert rep.total == (7 + 4 + 2) * 4 * 24 * (12 + 24) and rep.by_op == {"lstm": rep.total}


def test_gru_and_projected_lstm_formulas() -> None:
    gru = nn.GRU(12, 24, batch_first=True)
    rep = count_macs(gru, torch.randn(3, 7, 12))  # GRU runs as mm/addmm that the counter also sees
    assert rep.total == 21 * 3 * 24 * (12 + 24) and rep.by_op == {"gru": rep.total}
    proj = nn.LSTM(10, 16, proj_size=4, batch_first=True)
    with warnings.catch_warnings():  # "not supported with oneDNN": it falls back to the mm path
        warnings.simplefilter("ignore", UserWarning)
        rep = count_macs(proj, torch.randn(2, 5, 10))
    assert rep.total == 10 * (4 * 16 * (10 + 4) + 16 * 4)


def test_lstm_inside_a_model_is_attributed_to_its_branch() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 8)
            self.rnn = nn.LSTM(8, 16, batch_first=True)
            self.out = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.rnn(self.embed(x))[0][:, -1])

    rep = count_macs(Net(), torch.randint(0, 50, (4, 6)))
    assert rep.by_branch == {"embed": 0, "rnn": 24 * 4 * 16 * (8 + 16), "out": 4 * 16 * 3, "other": 0}
    assert rep.embedding_lookups == 24 and rep.total == sum(rep.by_branch.values())


def _student_batch(batch: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(batch, 1, 28, 28, generator=g),
        "text": torch.randint(1, 100, (batch, 10), generator=g),
        "audio": torch.randn(batch, 40, 50, generator=g),
        "label": torch.zeros(batch, dtype=torch.long),
        "lengths": {"text": torch.tensor([10, 6]), "audio": torch.tensor([50, 30])},
        "present": {},
    }


def test_student_preset_has_positive_macs_per_encoder_and_branches_sum_to_total() -> None:
    torch.manual_seed(0)
    spec = model_spec("student", modalities=["image", "text", "audio"], num_classes=10, vocab_size=100)
    model = build_model(spec).train()
    rep = count_macs(model, _student_batch())
    assert default_branches(model) == ["encoders.image", "encoders.text", "encoders.audio", "fusion", "head"]
    for name in ("encoders.image", "encoders.text", "encoders.audio", "fusion", "head"):
        assert rep.by_branch[name] > 0, name
    assert sum(rep.by_branch.values()) == rep.total == sum(rep.by_op.values())
    # The text branch is exactly: two one-direction LSTMs over B*T padded steps + the projection.
    lstm = 2 * (2 * 10) * 4 * 24 * (12 + 24)
    assert rep.by_op["lstm"] == lstm and rep.by_branch["encoders.text"] == lstm + 2 * 96 * 48
    assert rep.by_branch["head"] == 2 * 64 * 10 and rep.embedding_lookups == 20
    assert model.training  # the train/eval flag is restored


def test_bad_branch_names_are_rejected() -> None:
    net = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not submodules"):
        count_macs(net, torch.randn(1, 2), branches=["nope"])
    outer = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="must not nest"):
        count_macs(outer, torch.randn(1, 2), branches=["0", "0.0"])
