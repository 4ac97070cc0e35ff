"""Response-based losses: compare the student's logits with the teacher's.

Every loss here has ``forward(student_logits, teacher_logits, labels=None)``; the teacher is
detached inside, so no gradient ever reaches it. Leading dims beyond the class axis are treated as
rows (``[B, K]`` or ``[B, T, K]`` → ``N`` rows of ``K`` classes). Maths runs in at least float32
(half-precision inputs are promoted), since softmax at a temperature loses the tail in fp16/bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmdistill.data.batch import IGNORE_LABEL
from mmdistill.distill.losses import _checks
from mmdistill.distill.registries import LOSSES


def soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softened class probabilities ``softmax(logits / T)`` over the last axis.

    Args:
        logits: raw scores.
        temperature: ``T > 0``; larger values flatten the distribution (Hinton et al. 2015).

    Shapes:
        logits: ``[..., K]``. Returns ``[..., K]`` (rows sum to 1).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    return F.softmax(_checks.upcast(logits)[0] / temperature, dim=-1)


def _rows(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both logits as ``[N, K]`` in a common dtype >= float32, the teacher detached."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ"
        )
    k = student.shape[-1]
    s, t = _checks.upcast(student, teacher.detach())
    return s.reshape(-1, k), t.reshape(-1, k)


def _labels(labels: torch.Tensor | None, n: int, loss: str) -> torch.Tensor:
    """``labels`` flattened to ``[N]``; a loss that needs them fails clearly without them."""
    if labels is None:
        raise ValueError(
            f"loss '{loss}' needs class labels: call it as loss(student_logits, teacher_logits, labels), "
            "or use 'kd' for unlabelled data"
        )
    labels = labels.reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"loss '{loss}': {labels.shape[0]} labels for {n} rows of logits")
    return labels.long()


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` summed over classes and averaged over rows, from log-probabilities ``[N, K]``."""
    # kl_div(input, target) = KL(target || exp(input)); log_target avoids exp/log round trips at p=0.
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


@LOSSES.register("kd", family="logits")
class KDLoss(nn.Module):
    """Soft-target distillation: ``T^2 * KL(softmax(t/T) || softmax(s/T))``.

    The ``T^2`` factor keeps the gradient magnitude roughly independent of ``T`` (the soft-target
    gradients scale as ``1/T^2``), so the loss weight need not be retuned with the temperature.
    Reduction: KL summed over classes, mean over rows (``batchmean``).

    Reference: G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
    NIPS Deep Learning Workshop, 2015, arXiv:1503.02531.

    Args:
        temperature: softmax temperature ``T > 0`` (warns above 20).

    Shapes:
        student_logits, teacher_logits: ``[B, K]`` (or ``[..., K]``); labels: ignored. Returns ``[]``.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = _checks.temperature(temperature)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The KD loss (labels are accepted for a uniform signature and ignored)."""
        s, t = _rows(student_logits, teacher_logits)
        temp = self.temperature
        return temp * temp * _kl(F.log_softmax(t / temp, -1), F.log_softmax(s / temp, -1))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


@LOSSES.register("kd_ce", family="logits", needs_labels=True)
class KDCELoss(nn.Module):
    """Hinton's combined objective: ``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(p_t^T || p_s^T)``.

    The cross-entropy uses the hard labels at temperature 1 and averages over labelled rows only
    (``labels == IGNORE_LABEL`` (-100) rows are left out; with none labelled it is 0); the KD term
    averages over all rows, since the teacher's soft targets exist for unlabelled rows too.

    Reference: G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
    NIPS Deep Learning Workshop, 2015, arXiv:1503.02531.

    Args:
        temperature: softmax temperature of the KD term, ``> 0``.
        alpha: weight of the KD term in ``[0, 1]``; ``1 - alpha`` weighs the cross-entropy.

    Shapes:
        student_logits, teacher_logits: ``[B, K]``; labels: ``[B]`` long (required). Returns ``[]``.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        self.temperature = _checks.temperature(temperature)
        self.alpha = _checks.fraction(alpha, "alpha")

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The combined loss; raises ``ValueError`` when ``labels`` is None."""
        s, t = _rows(student_logits, teacher_logits)
        y = _labels(labels, s.shape[0], "kd_ce")
        temp = self.temperature
        kd = temp * temp * _kl(F.log_softmax(t / temp, -1), F.log_softmax(s / temp, -1))
        # Sum then divide by the labelled count (clamped to 1) instead of reduction="mean", which
        # would give NaN for a batch without labels and needs no host sync to check for one.
        ce_sum = F.cross_entropy(s, y, ignore_index=IGNORE_LABEL, reduction="sum")
        ce = ce_sum / (y != IGNORE_LABEL).sum().clamp_min(1)
        return (1.0 - self.alpha) * ce + self.alpha * kd

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, alpha={self.alpha:g}"


@LOSSES.register("mse_logits", family="logits")
class MSELogitsLoss(nn.Module):
    """Logit matching: ``mean((s - t)^2)`` over every element (rows and classes).

    Regressing the logits directly is the high-temperature limit of KD with zero-mean logits.

    Reference: J. Ba, R. Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014,
    arXiv:1312.6184.

    Shapes:
        student_logits, teacher_logits: ``[B, K]`` (or ``[..., K]``); labels: ignored. Returns ``[]``.
    """

    def __init__(self) -> None:
        super().__init__()  # explicit, so build_loss sees that it takes no kwargs

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The mean squared logit error."""
        s, t = _rows(student_logits, teacher_logits)
        return F.mse_loss(s, t)


@LOSSES.register("reverse_kl", family="logits")
class ReverseKLLoss(nn.Module):
    """Reverse (mode-seeking) KL: ``T^2 * KL(softmax(s/T) || softmax(t/T))``, mean over rows.

    Where forward KL (``kd``) makes the student cover all of the teacher's mass, reverse KL lets
    it concentrate on the teacher's main modes; useful for small students. The default ``T`` matches
    ``kd`` so the two can be swapped in a config.

    Reference: Y. Gu, L. Dong, F. Wei, M. Huang, "MiniLLM: Knowledge Distillation of Large
    Language Models", ICLR 2024, arXiv:2306.08543 (reverse KL for distillation).

    Args:
        temperature: softmax temperature ``T > 0``.

    Shapes:
        student_logits, teacher_logits: ``[B, K]`` (or ``[..., K]``); labels: ignored. Returns ``[]``.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = _checks.temperature(temperature)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The reverse-KL loss."""
        s, t = _rows(student_logits, teacher_logits)
        temp = self.temperature
        return temp * temp * _kl(F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


@LOSSES.register("symmetric_kl", family="logits")
class SymmetricKLLoss(nn.Module):
    """Jeffreys divergence: ``T^2 * (KL(p_t || p_s) + KL(p_s || p_t)) / 2`` with ``p = softmax(z/T)``.

    The average of ``kd`` and ``reverse_kl`` (mean over rows), so it is on the same scale as each.

    Reference: H. Jeffreys, "An Invariant Form for the Prior Probability in Estimation Problems",
    Proc. Royal Society A, 1946; used for distillation as a symmetric alternative to Hinton et al.,
    arXiv:1503.02531.

    Args:
        temperature: softmax temperature ``T > 0``.

    Shapes:
        student_logits, teacher_logits: ``[B, K]`` (or ``[..., K]``); labels: ignored. Returns ``[]``.
    """

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = _checks.temperature(temperature)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The symmetric-KL loss."""
        s, t = _rows(student_logits, teacher_logits)
        temp = self.temperature
        log_ps, log_pt = F.log_softmax(s / temp, -1), F.log_softmax(t / temp, -1)
        return temp * temp * 0.5 * (_kl(log_pt, log_ps) + _kl(log_ps, log_pt))

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


@LOSSES.register("dkd", family="logits", needs_labels=True)
class DKDLoss(nn.Module):
    """Decoupled KD: ``alpha * TCKD + beta * NCKD``.

    With ``p = softmax(z / T)`` and ``y`` the true class of a row:

    - ``TCKD = T^2 * KL(b_t || b_s)``, ``b = [p_y, 1 - p_y]`` (binary target-vs-rest distribution);
    - ``NCKD = T^2 * KL(q_t || q_s)``, ``q = softmax over the K-1 non-target logits / T``.

    Both are summed over classes and averaged over labelled rows; rows with
    ``labels == IGNORE_LABEL`` (-100) are left out (0 if none is labelled). The paper's linear
    warm-up of the loss weight over the first epochs belongs to the strategy's schedule, not here.

    Reference: B. Zhao, Q. Cui, R. Song, Y. Qiu, J. Liang, "Decoupled Knowledge Distillation",
    CVPR 2022, arXiv:2203.08679.

    Args:
        alpha: weight of TCKD, ``>= 0``.
        beta: weight of NCKD, ``>= 0`` (the paper uses 8 on CIFAR-100).
        temperature: softmax temperature ``T > 0``.

    Shapes:
        student_logits, teacher_logits: ``[B, K]`` with ``K >= 2``; labels: ``[B]`` long (required).
        Returns ``[]``.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> None:
        super().__init__()
        self.alpha = _checks.non_negative(alpha, "alpha")
        self.beta = _checks.non_negative(beta, "beta")
        self.temperature = _checks.temperature(temperature)

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The DKD loss; raises ``ValueError`` when ``labels`` is None."""
        s, t = _rows(student_logits, teacher_logits)
        y = _labels(labels, s.shape[0], "dkd")
        n, k = s.shape
        if k < 2:
            raise ValueError(f"loss 'dkd' needs at least 2 classes, got logits with {k}")
        keep = y != IGNORE_LABEL
        s, t, y = s[keep] / self.temperature, t[keep] / self.temperature, y[keep]
        if s.shape[0] == 0:
            return student_logits.sum() * 0.0  # no labelled row: zero, still attached to the graph
        tckd = _kl(_binary_log_probs(t, y), _binary_log_probs(s, y))
        nckd = _kl(F.log_softmax(_non_target(t, y), -1), F.log_softmax(_non_target(s, y), -1))
        temp2 = self.temperature * self.temperature
        return temp2 * (self.alpha * tckd + self.beta * nckd)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:g}, temperature={self.temperature:g}"


def _non_target(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The ``K - 1`` non-target entries of each row of ``z`` ``[N, K]``, in class order → ``[N, K-1]``."""
    mask = F.one_hot(y, z.shape[1]).bool()
    return z[~mask].reshape(z.shape[0], z.shape[1] - 1)


def _binary_log_probs(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log [p_y, 1 - p_y]`` of ``softmax(z)`` ``[N, K]`` → ``[N, 2]``, without cancellation.

    ``log(1 - p_y)`` is computed as ``logsumexp(non-target) - logsumexp(all)`` rather than from
    ``1 - p_y``, which rounds to 0 (log → -inf) when the model is confident.
    """
    lse = torch.logsumexp(z, dim=1)
    target = z.gather(1, y[:, None]).squeeze(1) - lse
    rest = torch.logsumexp(_non_target(z, y), dim=1) - lse
    return torch.stack([target, rest], dim=1)


__all__ = [
    "DKDLoss",
    "KDCELoss",
    "KDLoss",
    "MSELogitsLoss",
    "ReverseKLLoss",
    "SymmetricKLLoss",
    "soften",
]
