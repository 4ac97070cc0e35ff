"""Classification heads: fused vector ``[B, in_dim]`` → logits."""

from __future__ import annotations

import torch
from torch import nn

from mmdistill.models.registries import HEADS


def _check(in_dim: int, num_classes: int) -> None:
    if in_dim < 1 or num_classes < 1:
        raise ValueError(f"in_dim and num_classes must be >= 1, got {in_dim} and {num_classes}")


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Dropout + linear layer.

    Shapes:
        x: ``[B, in_dim]``. Returns ``[B, num_classes]``.
    """

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        _check(in_dim, num_classes)
        self.num_classes = int(num_classes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.fc(self.dropout(x))


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """Linear-ReLU-dropout-linear.

    Shapes:
        x: ``[B, in_dim]``. Returns ``[B, num_classes]``.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        _check(in_dim, num_classes)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.num_classes = int(num_classes)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, self.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        return self.net(x)


@HEADS.register("multitask")
class MultiTaskHead(nn.Module):
    """One sub-head per task; the first task is the primary one (``num_classes`` is its size).

    Args:
        in_dim: fused width.
        tasks: task name → number of classes, primary task first.
        hidden: hidden width of each MLP sub-head; 0 gives linear sub-heads.
        dropout: dropout inside each sub-head.

    Shapes:
        x: ``[B, in_dim]``. Returns task → ``[B, tasks[task]]``.
    """

    def __init__(self, in_dim: int, tasks: dict[str, int], hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        tasks = {str(t): int(k) for t, k in dict(tasks).items()}
        if not tasks:
            raise ValueError("tasks must name at least one task")
        bad = [t for t in tasks if not t or "." in t]
        if bad:
            raise ValueError(f"task names must be non-empty and contain no '.', got {bad}")
        self.tasks = tasks
        self.primary_task = next(iter(tasks))
        self.num_classes = tasks[self.primary_task]
        self.heads = nn.ModuleDict(
            {
                t: MLPHead(in_dim, k, hidden, dropout) if hidden > 0 else LinearHead(in_dim, k, dropout)
                for t, k in tasks.items()
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per task."""
        return {t: head(x) for t, head in self.heads.items()}
