"""Multimodal input mixup for distillation ("function matching").

Mixup (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) trains on convex
combinations of pairs of rows. For distillation, Beyer et al. ("Knowledge distillation: A good
teacher is patient and consistent", CVPR 2022) show that the student should see *the same*
mixed input as the teacher and match the teacher's output on it ("function matching"): every
epoch then shows the student new points of the teacher's function instead of the same training
rows, which is what lets long distillation schedules keep improving a small student.

How a multimodal row pair ``(a, b)`` with weight ``lam >= 0.5`` is mixed, per modality:

- image and audio (continuous): ``lam * x_a + (1 - lam) * x_b`` where both rows have the
  modality; the present row's tensor unchanged where only one has it. Audio is padded with zeros,
  so mixing two clips of different lengths gives a clip of the longer length.
- text (token ids cannot be interpolated): the tokens of the dominant row ``a``, or of ``b``
  where only ``b`` has text.
- presence: present where either row has the modality.

Labels are not mixed in the batch: the losses are ``lam * L(y_a) + (1 - lam) * L(y_b)`` (see
:meth:`~mmdistill.distill.strategies.base.DistillStrategy.forward`), which for cross-entropy is
mixup's own criterion and leaves label-free terms unchanged.

Because the mixed rows are new inputs, cached teacher outputs (keyed by row id) do not apply:
a student trained with mixup runs its teacher online on every mixed batch.
"""

from __future__ import annotations

import torch

from mmdistill.data.batch import Batch

__all__ = ["mix_batch", "permute_labels", "sample_mix"]


def sample_mix(rows: int, alpha: float) -> tuple[torch.Tensor, float]:
    """A partner permutation and one weight ``lam = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``.

    One weight per batch, as in the paper; ``lam >= 0.5`` makes each row the dominant one of its
    pair, so its text and ids are kept. Drawn from torch's global RNG (seeded by the run).

    Returns:
        ``perm`` (``[rows]`` int64, CPU) and ``lam`` in ``[0.5, 1]``.
    """
    if not alpha > 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    perm = torch.randperm(rows)
    lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    return perm, max(lam, 1.0 - lam)


def mix_batch(batch: Batch, perm: torch.Tensor, lam: float) -> Batch:
    """Row ``i`` mixed with row ``perm[i]`` at weight ``lam`` (see the module docstring).

    Shapes:
        batch per :mod:`mmdistill.data.batch`; ``perm`` ``[B]``. Returns a new batch of the same
        shapes (ids, labels and task labels are row ``i``'s).
    """
    present: dict[str, torch.Tensor] = batch.get("present", {})
    lengths: dict[str, torch.Tensor] = batch.get("lengths", {})
    out: Batch = {**batch, "present": dict(present), "lengths": dict(lengths)}
    for m, mask_a in present.items():
        x = batch.get(m)
        if not isinstance(x, torch.Tensor):
            continue
        idx = perm.to(x.device)
        mask_b = mask_a[idx]
        both, only_b = mask_a & mask_b, ~mask_a & mask_b
        shape = (-1,) + (1,) * (x.dim() - 1)
        if x.is_floating_point():
            w = torch.where(both, lam, torch.where(only_b, 0.0, 1.0)).to(x.dtype).view(shape)
            out[m] = w * x + (1.0 - w) * x[idx]
        else:
            out[m] = torch.where(only_b.view(shape), x[idx], x)
        if m in lengths:
            la, lb = lengths[m], lengths[m][idx]
            if x.is_floating_point():
                out["lengths"][m] = torch.where(both, torch.maximum(la, lb), torch.where(only_b, lb, la))
            else:
                out["lengths"][m] = torch.where(only_b, lb, la)
        out["present"][m] = mask_a | mask_b
    return out


def permute_labels(batch: Batch, perm: torch.Tensor) -> Batch:
    """A shallow copy whose ``label`` and ``tasks`` are row ``perm[i]``'s (the partner's labels)."""
    idx = perm.to(batch["label"].device)
    out: Batch = {**batch, "label": batch["label"][idx]}
    if batch.get("tasks"):
        out["tasks"] = {t: y[idx] for t, y in batch["tasks"].items()}
    return out
