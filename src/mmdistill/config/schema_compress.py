"""Config sections of the ``compress`` and ``export`` stages (issue 4).

``compress`` turns one trained student of the run (``compress.source``) into smaller variants,
each saved like any student as ``students/<source>-<suffix>/`` (model.safetensors + model.json):

- ``prune``: structured channel pruning (torch-pruning), then recovery fine-tuning that reuses the
  distillation recipe with the teacher still in place → ``<source>-pruned``;
- ``sparsity``: unstructured magnitude masks, reported as sparsity without speed →
  ``<source>-sparse``;
- ``sweep``: accuracy versus weight bits (fake quantization) per branch, written to
  ``compress/bit_sweep.json``;
- ``qat``: quantization-aware fine-tuning at ``qat.bits`` → ``<source>-qat<bits>``.

``export`` writes ONNX files of the fp32 students it is told to ship, quantizes them to int8 for
ONNX Runtime, verifies every artifact against the eager model, and times each runtime in its own
process (``export/<variant>*.onnx``, ``export/verify.json``, ``export/latency.json``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mmdistill.config._base import Float as _Float
from mmdistill.config._base import Int as _Int
from mmdistill.config._base import _Strict

Ratio = Annotated[_Float, Field(ge=0, lt=1)]
Bits = Annotated[_Int, Field(ge=2, le=8)]
Branch = Literal["image", "text", "audio", "fusion", "head"]

BRANCHES: tuple[str, ...] = ("image", "text", "audio", "fusion", "head")
"""The parts of a model that can get their own pruning ratio or precision."""


class RecoveryConfig(_Strict):
    """Fine-tuning after pruning or during QAT; reuses the distillation recipe (teacher in place).

    ``mixup`` > 0 fine-tunes by function matching (Beyer et al., CVPR 2022): multimodal input
    mixup with that Beta parameter and the teacher online on the mixed inputs, as
    ``distill.students.<name>.mixup`` does; each epoch then costs a teacher forward pass.
    """

    epochs: Annotated[_Int, Field(ge=0)] = 4
    lr: Annotated[_Float, Field(gt=0)] = 1.0e-3
    strategy: str = "logit_kd"
    temperature: Annotated[_Float, Field(gt=0)] = 4.0
    alpha: Annotated[_Float, Field(ge=0, le=1)] = 0.5
    mixup: Annotated[_Float, Field(ge=0)] = 0.0


class PruneConfig(_Strict):
    """Structured channel pruning: ``ratio`` of the channels removed (``branch_ratios`` per branch).

    ``round_to`` keeps every pruned width a multiple of it (None: any width). ONNX Runtime's
    convolutions work on blocks of channels (16 floats with AVX-512), so a width that is not a
    multiple of the block computes as the next multiple up and pruning it saves less than its MACs.
    """

    enabled: bool = True
    ratio: Ratio = 0.5
    branch_ratios: dict[Branch, Ratio] = Field(default_factory=dict)
    importance: Literal["magnitude", "taylor"] = "magnitude"
    taylor_batches: Annotated[_Int, Field(gt=0)] = 8
    round_to: Annotated[_Int, Field(gt=0)] | None = None
    recover: RecoveryConfig = Field(default_factory=RecoveryConfig)


class SparsityConfig(_Strict):
    """Unstructured magnitude pruning (masks): real sparsity, no speed or size change on dense runtimes."""

    enabled: bool = False
    sparsity: Ratio = 0.5
    scope: Literal["global", "layer"] = "global"


class SweepConfig(_Strict):
    """Accuracy versus uniform b-bit min-max weight quantization, per branch and for the whole model."""

    enabled: bool = True
    bits: list[Bits] = Field(default_factory=lambda: [2, 3, 4, 5, 6, 8])
    branches: list[Branch] | None = None
    per_channel: bool = True


class QatConfig(_Strict):
    """Quantization-aware fine-tuning (fake quantization, straight-through estimator).

    ``bits: null`` picks the widest bit width (from ``sweep.bits``) at which post-training
    quantization of the whole model loses more than ``max_ptq_drop`` points; none → no QAT.
    """

    enabled: bool = False
    bits: Bits | None = None
    max_ptq_drop: Annotated[_Float, Field(ge=0)] = 1.0
    policy: dict[str, Bits] = Field(default_factory=dict)
    recover: RecoveryConfig = Field(default_factory=lambda: RecoveryConfig(epochs=3, lr=5.0e-4))


class CompressConfig(_Strict):
    """The compress stage: which student to compress and how (see the module docstring)."""

    source: str | None = None
    prune: PruneConfig = Field(default_factory=PruneConfig)
    sparsity: SparsityConfig = Field(default_factory=SparsityConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    qat: QatConfig = Field(default_factory=QatConfig)


class QuantizeConfig(_Strict):
    """int8 on ONNX Runtime: static QDQ (calibrated on training batches) and restricted dynamic."""

    static: bool = True
    dynamic: bool = False
    per_channel: bool = True
    calibration_batches: Annotated[_Int, Field(gt=0)] = 8
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    keep_fp32: list[Branch] = Field(default_factory=list)
    torch_dynamic: bool = False


class VerifyConfig(_Strict):
    """Thresholds an exported artifact must meet against the eager model on held-out batches."""

    atol: Annotated[_Float, Field(gt=0)] = 1.0e-4
    min_agreement: Annotated[_Float, Field(gt=0, le=1)] = 0.99
    int8_min_agreement: Annotated[_Float, Field(gt=0, le=1)] = 0.95


class ExportLatencyConfig(_Strict):
    """Per-runtime latency, each variant in its own process, rounds interleaved."""

    enabled: bool = True
    batch_sizes: list[Annotated[_Int, Field(gt=0)]] = Field(default_factory=lambda: [1, 64])
    threads: Annotated[_Int, Field(gt=0)] = 1
    warmup: Annotated[_Int, Field(ge=0)] = 10
    repeats: Annotated[_Int, Field(gt=0)] = 50
    rounds: Annotated[_Int, Field(gt=0)] = 3
    include_teacher: bool = True


class ExportConfig(_Strict):
    """The export stage: ONNX files, int8 variants, verification and latency.

    ``variants: null`` exports the compress source and its pruned and sparse variants (QAT variants
    below 8 bits have no integer kernels on ONNX Runtime and stay eager). ``keep_faster`` ships the
    fastest artifact at batch 1 whose validation accuracy is within ``max_accuracy_drop`` points of
    the source student's eager fp32 validation accuracy (so the test accuracy reported for it is not
    the one it was picked on); a compressed artifact slower than its parent is flagged.
    """

    variants: list[str] | None = None
    opset: Annotated[_Int, Field(ge=13, le=21)] = 17
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    latency: ExportLatencyConfig = Field(default_factory=ExportLatencyConfig)
    keep_faster: bool = True
    max_accuracy_drop: Annotated[_Float, Field(ge=0)] = 0.5
