"""``mmdistill predict``: classify real files with a checkpoint (eager) or an exported ``.onnx`` file.

Files are preprocessed exactly as in training: the preprocessing section and the class names saved
in the checkpoint's ``model.json`` (``extra``) rebuild the run's
:func:`~mmdistill.recipes.data.preprocessor_from_config`, and the run's ``tokenizer.json`` is found
next to the checkpoint or in a folder above it. An ``.onnx`` file finds its checkpoint through its
sidecar ``<model>.onnx.json`` (written by :func:`~mmdistill.export.onnx.export_onnx`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mmdistill.cli.common import console

_TOKENIZER_SEARCH_DEPTH = 3  # run/students/<variant>/ → the run folder is two levels up


@dataclass
class Prediction:
    """The result of :func:`predict_files`.

    Attributes:
        model: the checkpoint directory or ONNX file used.
        runtime: ``"pytorch"`` or ``"onnxruntime"``.
        label: the predicted class name.
        index: the predicted class index.
        top: the ``top`` most likely classes, ``{"class", "index", "probability"}``, best first.
        inputs: modality → what was given (file path or text).
    """

    model: str
    runtime: str
    label: str
    index: int
    top: list[dict[str, Any]]
    inputs: dict[str, str]


def _error(message: str) -> Exception:
    from mmdistill.errors import DataError

    return DataError(message)


def _find_tokenizer(checkpoint: Path, name: str | None, meta_path: Path) -> Path:
    from mmdistill.errors import CheckpointError

    if not name:
        raise CheckpointError(
            f"{meta_path}: the model reads text but extra.tokenizer names no tokenizer file; re-save the "
            "checkpoint with the run's checkpoint_extra (it records tokenizer.json)"
        )
    folders = [checkpoint, *list(checkpoint.resolve().parents)[: _TOKENIZER_SEARCH_DEPTH - 1]]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"{meta_path}: its tokenizer {name!r} is in none of {[str(f) for f in folders]}; copy the run's "
        f"{name} next to the checkpoint (token ids must be those of training)"
    )


def _preprocessor(checkpoint: Path, extra: dict[str, Any], modalities: list[str]) -> Any:
    """The training-time :class:`~mmdistill.data.preprocess.Preprocessor` of ``checkpoint``."""
    from pydantic import ValidationError

    from mmdistill.config.schema import Config
    from mmdistill.data.transforms.text import TextTokenizer
    from mmdistill.errors import CheckpointError
    from mmdistill.models.checkpoint import SPEC_FILE
    from mmdistill.recipes.data import preprocessor_from_config

    meta_path = checkpoint / SPEC_FILE
    preprocessing = extra.get("preprocessing")
    if not isinstance(preprocessing, dict):
        raise CheckpointError(
            f"{meta_path}: extra.preprocessing is missing, so the training-time preprocessing is unknown; "
            "re-save the checkpoint with mmdistill's recipes (they record cfg.data's image/audio/text)"
        )
    try:
        cfg = Config.model_validate({"data": {**preprocessing, "modalities": modalities}})
    except ValidationError as exc:
        raise CheckpointError(f"{meta_path}: extra.preprocessing is not a valid data section: {exc}") from exc
    tokenizer = None
    if "text" in modalities:
        tokenizer = TextTokenizer.load(_find_tokenizer(checkpoint, extra.get("tokenizer"), meta_path))
    return preprocessor_from_config(cfg, tokenizer)


def _load_runtime(model_path: Path, threads: int) -> tuple[Any, str, Path, list[str]]:
    """(callable batch → logits numpy, runtime name, checkpoint dir, modalities) for ``model_path``."""
    from mmdistill.errors import CheckpointError

    if not model_path.exists():
        raise CheckpointError(
            f"{model_path}: not found; pass a checkpoint folder (model.json + model.safetensors) or an "
            ".onnx file written by mmdistill's export"
        )
    if model_path.is_dir():
        import torch

        from mmdistill.models.checkpoint import load_model

        model, _ = load_model(model_path)

        def run_eager(batch: dict[str, Any]) -> Any:
            with torch.no_grad():
                return model(batch).logits.numpy()

        return run_eager, "pytorch", model_path, list(model.modalities)
    if model_path.suffix != ".onnx":
        raise CheckpointError(
            f"{model_path}: neither a checkpoint folder nor an .onnx file; pass the folder holding "
            "model.json or the exported .onnx file"
        )
    from mmdistill.export.onnx import ExportError, load_export_info, sidecar_path
    from mmdistill.export.verify import make_session, run_session

    info = load_export_info(model_path)
    checkpoint = info.checkpoint_dir()
    if checkpoint is None or not checkpoint.is_dir():
        got = "none" if checkpoint is None else f"{info.checkpoint!r} ({checkpoint}), which does not exist"
        raise ExportError(
            f"{sidecar_path(model_path)}: 'checkpoint' names {got}; predict needs the checkpoint folder for "
            "the classes, tokenizer and preprocessing: re-export with export_onnx(..., checkpoint=DIR) or "
            "move the .onnx file together with its run folder"
        )
    session = make_session(model_path, threads=threads)
    return (lambda batch: run_session(session, batch)), "onnxruntime", checkpoint, list(info.modalities)


def predict_files(
    model_path: str | Path,
    *,
    image: str | Path | None = None,
    text: str | None = None,
    audio: str | Path | None = None,
    top: int = 5,
    threads: int = 1,
) -> Prediction:
    """Classify one sample given as files/text with a checkpoint folder or an exported ``.onnx``.

    Args:
        model_path: checkpoint folder (eager PyTorch) or ``.onnx`` file with its sidecar.
        image: image file (any format Pillow reads).
        text: the text.
        audio: audio file (any format libsndfile reads); resampled to the training rate.
        top: how many classes to return, best first.
        threads: ONNX Runtime intra-op threads.

    Raises:
        MMDistillError: a file is missing or unreadable, no modality is given, a modality the model
            does not read is given, or the ``.onnx`` file has no usable sidecar.
    """
    import numpy as np

    from mmdistill.data.collate import collate
    from mmdistill.data.records import RawSample
    from mmdistill.data.transforms.audio import load_audio
    from mmdistill.data.transforms.image import load_image
    from mmdistill.models.checkpoint import read_model_json

    given = {m: v for m, v in (("image", image), ("text", text), ("audio", audio)) if v is not None}
    if not given:
        raise _error("give at least one input: --image FILE, --text TEXT and/or --audio FILE")
    if top < 1:
        raise _error(f"--top must be >= 1, got {top}")
    model_path = Path(model_path)
    run, runtime, checkpoint, modalities = _load_runtime(model_path, threads)
    unread = [m for m in given if m not in modalities]
    if unread:
        flags = ", ".join(f"--{m}" for m in unread)
        raise _error(
            f"{model_path}: the model reads {', '.join(modalities)}, not {', '.join(unread)}; drop {flags}"
        )
    extra = dict(read_model_json(checkpoint).get("extra") or {})
    pre = _preprocessor(checkpoint, extra, modalities)
    rate = pre.audio.sample_rate if pre.audio is not None else 16000
    raw = RawSample(
        id="input", label=0, split="test",
        image=load_image(image) if image is not None else None,
        text=str(text) if text is not None else None,
        audio=load_audio(audio, rate) if audio is not None else None,
        sample_rate=rate,
    )
    logits = np.asarray(run(collate([pre(raw)])), dtype=np.float64)[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    classes = [str(c) for c in extra.get("classes") or []]
    names = classes if len(classes) == probs.size else [f"class {i}" for i in range(probs.size)]
    order = np.argsort(-probs, kind="stable")[:top]
    best = [{"class": names[i], "index": int(i), "probability": float(probs[i])} for i in order]
    return Prediction(model=str(model_path), runtime=runtime, label=best[0]["class"], index=best[0]["index"],
                      top=best, inputs={m: str(v) for m, v in given.items()})


def predict_command(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", help="Checkpoint folder (model.json + weights) or .onnx file."),
    ],
    image: Annotated[str | None, typer.Option("--image", help="Image file.", show_default=False)] = None,
    text: Annotated[str | None, typer.Option("--text", help="Text input.", show_default=False)] = None,
    audio: Annotated[
        str | None, typer.Option("--audio", help="Audio file (WAV, FLAC, OGG).", show_default=False)
    ] = None,
    top: Annotated[int, typer.Option("--top", "-k", help="Show the K most likely classes.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    threads: Annotated[int, typer.Option("--threads", help="ONNX Runtime intra-op threads.")] = 1,
) -> None:
    """Classify files with a trained model; any modality may be left out.

    Example: `mmdistill predict runs/demo/students/kd --image digit.png --text "seven" --audio seven.wav`
    """
    result = predict_files(model, image=image, text=text, audio=audio, top=top, threads=threads)
    if as_json:
        typer.echo(json.dumps(asdict(result), indent=2))
        return
    from rich.table import Table

    table = Table(title=f"prediction: {result.label}  ({result.runtime}, {result.model})")
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for rank, row in enumerate(result.top, start=1):
        table.add_row(str(rank), row["class"], f"{row['probability']:.4f}")
    console().print(table)
