"""The configuration schema: pydantic models with every key, its type, default and range.

Every model forbids unknown keys (a typo must not silently fall back to a default). Checks that need
more than one field or the outside world (files, registries, plugins) live in
:mod:`mmdistill.config.validation`; this module only describes shapes and single-value ranges.
``docs/config.md`` documents every key and must be kept in step with this file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from mmdistill.config._base import Float, Int, PositiveInt, _Strict
from mmdistill.config.schema_compress import CompressConfig, ExportConfig

Modality = Literal["image", "text", "audio"]
Stage = Literal["teacher", "baselines", "student", "distill", "compress", "export", "evaluate"]
Device = Literal["cpu", "cuda", "auto"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

STAGES: tuple[str, ...] = ("teacher", "baselines", "student", "distill", "compress", "export", "evaluate")
"""Pipeline stages in the order they run."""


def _unique_modalities(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if not value:
        raise ValueError("must list at least one modality (image, text, audio)")
    dup = sorted({m for m in value if value.count(m) > 1})
    if dup:
        raise ValueError(f"lists {', '.join(dup)} more than once; list each modality once")
    return value


class ImageConfig(_Strict):
    """Image preprocessing: resize to ``size``×``size``, then ``(x/255 - mean) / std``."""

    size: PositiveInt = 28
    channels: Literal[1, 3] = 1
    mean: Float = 0.5
    std: Annotated[Float, Field(gt=0)] = 0.25


class AudioConfig(_Strict):
    """Audio preprocessing: resample, crop/pad to ``max_seconds``, log-mel spectrogram."""

    sample_rate: PositiveInt = 16000
    n_fft: PositiveInt = 400
    hop_length: PositiveInt = 160
    n_mels: PositiveInt = 40
    f_min: Annotated[Float, Field(ge=0)] = 20.0
    f_max: Annotated[Float, Field(gt=0)] | None = None
    max_seconds: Annotated[Float, Field(gt=0)] = 1.0


class TextConfig(_Strict):
    """Text preprocessing: a word-piece tokenizer trained on the training split."""

    vocab_size: Annotated[Int, Field(ge=16)] = 2000
    max_length: PositiveInt = 32
    lowercase: bool = True


class DataConfig(_Strict):
    """Where the samples come from and how they are batched and preprocessed."""

    source: Literal["builtin", "manifest", "shards"] = "builtin"
    manifest: str | None = None
    shards: str | None = None
    stream: bool = False  # source: shards only: stream the train split (docs/data.md, "Shards")
    allow_outside_root: bool = False
    on_error: Literal["raise", "skip"] = "raise"
    modalities: list[Modality] = Field(default_factory=lambda: ["image", "text", "audio"])
    classes: list[str] | None = None
    tasks: list[str] = Field(default_factory=list)
    task_weights: dict[str, Annotated[Float, Field(ge=0)]] = Field(default_factory=dict)
    limit: PositiveInt | None = None
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt = 256
    num_workers: Annotated[Int, Field(ge=0)] = 0
    image: ImageConfig = Field(default_factory=ImageConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    text: TextConfig = Field(default_factory=TextConfig)

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: list[str]) -> list[str]:
        return _unique_modalities(value) or value


class ComponentConfig(_Strict):
    """A registry name plus keyword arguments for its constructor."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Strict):
    """Optimisation settings of one training stage (AdamW + warmup + cosine decay)."""

    epochs: PositiveInt = 10
    lr: Annotated[Float, Field(gt=0)] = 3e-3
    weight_decay: Annotated[Float, Field(ge=0)] = 0.01
    warmup: Annotated[Float, Field(ge=0, lt=1)] = 0.05
    patience: PositiveInt | None = 3
    grad_clip: Annotated[Float, Field(gt=0)] | None = 1.0
    label_smoothing: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    modality_dropout: Annotated[Float, Field(ge=0, lt=1)] = 0.0


class ModelConfig(_Strict):
    """One model (teacher or student): a preset plus optional per-part overrides."""

    preset: str
    modalities: list[Modality] | None = None
    encoders: dict[Modality, ComponentConfig] = Field(default_factory=dict)
    fusion: ComponentConfig | None = None
    head: ComponentConfig | None = None
    checkpoint: str | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: list[str] | None) -> list[str] | None:
        return _unique_modalities(value)


class TeacherTextConfig(_Strict):
    """A teacher's own text preprocessing: its tokenizer file (``tokenizer.json``, PAD = 0) and length.

    ``tokenizer: null`` = the run's tokenizer (trained on the training split).
    """

    tokenizer: str | None = None
    max_length: PositiveInt = 32


class TeacherPreprocessingConfig(_Strict):
    """A teacher's own preprocessing of the modalities it reads through mmdistill transforms.

    ``null`` = the student's ``data.<modality>`` settings. Pretrained encoders bring their own
    preprocessing (tokenizer, 16 kHz mel front end) and ignore these.
    """

    image: ImageConfig | None = None
    audio: AudioConfig | None = None
    text: TeacherTextConfig | None = None


class PretrainedEncoderConfig(_Strict):
    """One frozen pretrained encoder of a teacher (``mmdistill list`` shows ``PRETRAINED_ENCODERS``).

    ``finetune_layers: 0`` = frozen: its embeddings are computed once per sample (embedding store)
    and only the fusion and head train; ``N > 0`` = its last N layers train too, online (PyTorch
    and Hugging Face encoders only; bypasses the store).
    """

    name: str
    path: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    finetune_layers: Annotated[Int, Field(ge=0)] = 0


class OnnxInputConfig(_Strict):
    """One input of an ONNX teacher graph and what feeds it (``source``: ``image``, ``text``,
    ``text_lengths``, ``audio_present``, ...; default: the input's name). ``shape``: one entry per
    axis, a size or null where any size is fed."""

    name: str
    dtype: Literal["float32", "int64", "bool"]
    shape: list[PositiveInt | None]
    source: str | None = None


class ExternalTeacherConfig(_Strict):
    """A whole teacher that is not an mmdistill model (docs/teachers.md).

    ``torch``: ``module`` (a ``TORCH_MODULES`` name registered by a module in ``plugins``),
    ``kwargs`` and ``path`` (its ``.safetensors`` weights); ``huggingface``: ``path`` = a local
    folder holding a sequence classifier; ``onnx``: ``path`` = the ``.onnx`` file, ``inputs``
    (null = mmdistill's export contract), ``logits`` and ``features`` (feature → output name).
    """

    kind: Literal["torch", "huggingface", "onnx"]
    path: str | None = None
    module: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    num_classes: PositiveInt | None = None
    inputs: list[OnnxInputConfig] | None = None
    logits: str = "logits"
    features: dict[str, str] = Field(default_factory=dict)


class TeacherConfig(ModelConfig):
    """The teacher: an mmdistill model (trained, or ``checkpoint``), pretrained encoders + a trained
    fusion/head (``pretrained``), or a whole external model (``external``).

    ``pretrained``: modality → frozen encoder; the teacher's other modalities use the preset's
    mmdistill encoders, trained with the fusion and head. ``embedding``: kwargs of the
    ``embedding_<m>`` encoders reading stored embeddings (``dim``, ``norm``, ``dropout``).
    ``preprocessing``: the teacher's own settings for the modalities it reads through mmdistill
    transforms (null = ``data.*``).
    """

    pretrained: dict[Modality, PretrainedEncoderConfig] = Field(default_factory=dict)
    embedding: dict[str, Any] = Field(default_factory=dict)
    external: ExternalTeacherConfig | None = None
    preprocessing: TeacherPreprocessingConfig = Field(default_factory=TeacherPreprocessingConfig)


class BaselinesConfig(_Strict):
    """Baselines: one model per data modality (``unimodal``), to show what fusion adds, and one per
    listed modality subset (``subsets``, e.g. ``[[image, text], [text, audio]]``): specialists that
    never see the other modalities, saved as ``baselines/image+text/`` and named
    ``baseline-image+text``. Both can teach (``distill.teachers``); a ``multi_teacher`` student with
    ``teacher_weighting: routed`` learns each row from the specialist of the modalities it sees."""

    unimodal: bool = True
    subsets: list[list[Modality]] = Field(default_factory=list)
    preset: str = "teacher"
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("subsets")
    @classmethod
    def _check_subsets(cls, value: list[list[str]]) -> list[list[str]]:
        seen: list[set[str]] = []
        for i, subset in enumerate(value):
            _unique_modalities(subset)
            if len(subset) < 2:
                raise ValueError(f"[{i}] = {subset}: a subset lists at least two modalities (single "
                                 "modalities are the unimodal baselines, baselines.unimodal)")
            if set(subset) in seen:
                raise ValueError(f"[{i}] = {subset}: the same subset is listed twice; list each once")
            seen.append(set(subset))
        return value


class DistillTermConfig(_Strict):
    """One weighted loss term of a distilled student (a loss registry name plus its kwargs).

    ``student_feature``/``teacher_feature`` (default ``fused``) name the features a feature,
    relation or contrastive loss compares; ``teacher`` picks the teacher they come from (default:
    the student's first teacher). Logit losses use none of the three.
    """

    name: str
    weight: Annotated[Float, Field(ge=0)] = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)
    student_feature: str | None = None
    teacher_feature: str | None = None
    teacher: str | None = None


class DistillStudentConfig(_Strict):
    """One distilled student variant, saved as ``students/<name>/`` (evaluated as ``student-<name>``).

    Architecture: ``preset: null`` reuses the scratch student's preset and overrides (the fair
    comparison); a preset name builds that preset with this section's own overrides.
    ``modalities: null`` = the scratch student's. ``terms: null`` = the strategy's defaults,
    ``ce_weight: null`` = 0 with a ``kd_ce`` term (which holds CE already), else 1.
    ``teachers: null`` = ``distill.teachers``. ``modality_dropout: null`` = the train section's
    (``robust``: 0.3 when that is 0); it hides modalities from the student only.
    ``mixup`` = Beta parameter of multimodal input mixup ("function matching"; 0 = off): the
    teacher then runs online on every mixed batch instead of being read from the cache.
    ``kwargs`` = the strategy's own options (``teacher_free``: ``correct_prob``).
    ``train: null`` = the ``student.train`` section.
    """

    strategy: str = "logit_kd"
    preset: str | None = None
    modalities: list[Modality] | None = None
    encoders: dict[Modality, ComponentConfig] = Field(default_factory=dict)
    fusion: ComponentConfig | None = None
    head: ComponentConfig | None = None
    terms: list[DistillTermConfig] | None = None
    ce_weight: Annotated[Float, Field(ge=0)] | None = None
    teachers: list[str] | None = None
    teacher_weighting: Literal["fixed", "confidence", "routed"] = "fixed"
    teacher_weights: dict[str, Annotated[Float, Field(ge=0)]] = Field(default_factory=dict)
    modality_dropout: Annotated[Float, Field(ge=0, lt=1)] | None = None
    mixup: Annotated[Float, Field(ge=0)] = 0.0
    kwargs: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig | None = None

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, value: list[str] | None) -> list[str] | None:
        return _unique_modalities(value)


class DistillConfig(_Strict):
    """The distill stage: which run models teach, whether their outputs are cached, which students."""

    cache: Literal["auto", "on", "off"] = "auto"
    teachers: list[str] = Field(default_factory=lambda: ["teacher"])
    students: dict[str, DistillStudentConfig] = Field(default_factory=dict)


class EvalConfig(_Strict):
    """Evaluation settings; latency is measured on CPU with ``latency_threads`` threads."""

    latency: bool = True
    latency_batch_sizes: list[PositiveInt] = Field(default_factory=lambda: [1, 64])
    latency_repeats: PositiveInt = 30
    latency_warmup: Annotated[Int, Field(ge=0)] = 5
    latency_threads: PositiveInt = 1


class LoggingConfig(_Strict):
    """Console and metrics logging."""

    level: LogLevel = "INFO"
    progress: bool = True
    quiet: bool = False
    tensorboard: bool = False


class Config(_Strict):
    """The whole run: one file describes data, teacher, baselines, student and evaluation."""

    name: Annotated[str, Field(min_length=1)] = "demo"
    seed: Int = 0
    output_dir: Annotated[str, Field(min_length=1)] = "runs"
    device: Device = "cpu"
    threads: PositiveInt | None = None
    plugins: list[str] = Field(default_factory=list)
    stages: list[Stage] = Field(default_factory=lambda: list(STAGES))
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=lambda: TeacherConfig(preset="teacher"))
    student: ModelConfig = Field(default_factory=lambda: ModelConfig(preset="student"))
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_presets(cls, data: Any) -> Any:
        # ``teacher: {train: {epochs: 3}}`` should keep the "teacher" preset rather than fail for a
        # missing key, so the preset default depends on which section it sits in.
        if isinstance(data, dict):
            data = dict(data)
            for section in ("teacher", "student"):
                sub = data.get(section)
                if isinstance(sub, dict) and "preset" not in sub:
                    data[section] = {"preset": section, **sub}
        return data

    @field_validator("stages")
    @classmethod
    def _unique_stages(cls, value: list[str]) -> list[str]:
        dup = sorted({s for s in value if value.count(s) > 1})
        if dup:
            raise ValueError(f"lists {', '.join(dup)} more than once; list each stage once")
        return value


def field_names(model: type[BaseModel]) -> list[str]:
    """The keys a config section accepts, in declaration order."""
    return list(model.model_fields)
