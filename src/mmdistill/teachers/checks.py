"""Semantic checks of the teacher-spec keys (``teacher.pretrained``, ``external``, ``preprocessing``).

Called by :func:`mmdistill.config.validation.semantic_problems`; one line per problem in the
``<key>: <what>, got <value>; <fix>`` format. A missing optional package is *not* a problem here
(a config must validate on a machine without the extras): :func:`dependency_problems` lists them
for the run to fail before any data is read.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmdistill.config.schema import Config
from mmdistill.teachers.deps import EXTRAS, available
from mmdistill.teachers.encoders import PICKLE_SUFFIXES
from mmdistill.teachers.registry import PRETRAINED_ENCODERS, TORCH_MODULES, register_all

log = logging.getLogger(__name__)


def _pretrained_problems(cfg: Config) -> list[str]:
    from mmdistill.config.validation import show
    from mmdistill.teachers.spec import encoder_kwargs_problems, teacher_modalities

    t = cfg.teacher
    mods = teacher_modalities(cfg)
    problems = []
    for m, enc in t.pretrained.items():
        key = f"teacher.pretrained.{m}"
        if m not in mods:
            problems.append(f"{key}: the teacher does not read {m} (teacher.modalities / data.modalities: "
                            f"{', '.join(mods)}); remove it or add {m}")
        if m in t.encoders:
            problems.append(f"teacher.encoders.{m}: {m} uses the pretrained encoder '{enc.name}'; remove one "
                            f"of "
                            f"teacher.encoders.{m} and {key}")
        if enc.name not in PRETRAINED_ENCODERS:
            problems.append(PRETRAINED_ENCODERS.unknown_message(enc.name, key=f"{key}.name"))
            continue
        meta = PRETRAINED_ENCODERS.entry(enc.name).meta
        if meta.get("modality") not in (None, m):
            fitting = [e.name for e in PRETRAINED_ENCODERS.entries() if e.meta.get("modality") in (None, m)]
            problems.append(f"{key}.name: pretrained encoder '{enc.name}' reads {meta['modality']}, not {m}; "
                            f"pick one of {', '.join(fitting)}")
        if enc.finetune_layers and not meta.get("finetunable"):
            problems.append(f"{key}.finetune_layers: '{enc.name}' runs in ONNX Runtime and cannot be "
                            f"fine-tuned, "
                            f"got {enc.finetune_layers}; set 0 (frozen, embeddings stored once)")
        problems += encoder_kwargs_problems(key, enc.name, enc.kwargs)
        if enc.path is not None and not Path(enc.path).exists():
            problems.append(f"{key}.path: not found, got {show(enc.path)}; point it at the model folder or "
                            f"file")
    return problems


def external_kwargs_problems(kind: str, kwargs: dict) -> list[str]:
    """Unknown ``teacher.external.kwargs`` of a ``huggingface`` / ``onnx`` teacher (its class's
    keyword-only arguments decide; a ``torch`` module's constructor checks its own)."""
    import inspect

    from mmdistill.config.validation import suggest

    if kind == "torch":
        return []
    if kind == "huggingface":
        from mmdistill.teachers.huggingface import HFClassifierTeacher as cls
    else:
        from mmdistill.teachers.onnx import OnnxTeacher as cls
    accepted = [n for n, p in inspect.signature(cls.__init__).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("inputs", "logits", "features")]
    return [f"teacher.external.kwargs.{k}: kind '{kind}' takes no argument '{k}'"
            f"{suggest(k, accepted, 'accepted')}" for k in kwargs if k not in accepted]


def _external_problems(cfg: Config) -> list[str]:
    from mmdistill.config.validation import show, suggest

    ext = cfg.teacher.external
    assert ext is not None
    key = "teacher.external"
    problems = []
    if ext.kind == "torch":
        if not ext.module:
            problems.append(f"{key}.module: kind 'torch' needs the TORCH_MODULES name of your teacher class, "
                            "registered by a module listed in plugins")
        elif ext.module not in TORCH_MODULES:
            problems.append(f"{key}.module: no teacher module {show(ext.module)} is registered"
                            f"{suggest(ext.module, TORCH_MODULES.names(), 'registered')}; list the module "
                            f"that "
                            "registers it in plugins")
    elif ext.module is not None:
        problems.append(f"{key}.module: only used with kind 'torch', got {show(ext.module)}; remove it")
    problems += external_kwargs_problems(ext.kind, ext.kwargs)
    if ext.inputs is not None and ext.kind != "onnx":
        problems.append(f"{key}.inputs: only used with kind 'onnx'; remove it")
    if ext.path is None:
        if ext.kind != "torch":
            problems.append(f"{key}.path: kind '{ext.kind}' needs the model's "
                            f"{'folder' if ext.kind == 'huggingface' else '.onnx file'}")
    else:
        p = Path(ext.path)
        if not p.exists():
            problems.append(f"{key}.path: not found, got {show(ext.path)}; check the path (relative paths "
                            f"resolve "
                            "against the current folder)")
        elif ext.kind == "huggingface" and not p.is_dir():
            problems.append(f"{key}.path: kind 'huggingface' needs a folder saved with save_pretrained, got "
                            f"a "
                            f"file {show(ext.path)}")
        elif ext.kind == "torch" and p.suffix in PICKLE_SUFFIXES:
            problems.append(f"{key}.path: {show(ext.path)} is a pickle checkpoint, which mmdistill never "
                            f"loads; "
                            "save the state_dict with safetensors.torch.save_file and point to the "
                            ".safetensors")
    return problems


def teacher_problems(cfg: Config) -> list[str]:
    """Every problem of the teacher-spec keys of ``cfg`` (plugins must be imported already)."""
    from mmdistill.config.validation import show

    register_all()
    t = cfg.teacher
    problems = []
    if t.pretrained and t.external is not None:
        problems.append("teacher.pretrained / teacher.external: set one of them (pretrained encoders + a "
                        "trained "
                        "head, or a whole external model), not both")
    if (t.pretrained or t.external is not None) and t.checkpoint is not None:
        problems.append(f"teacher.checkpoint: loads an mmdistill teacher, got {show(t.checkpoint)} together "
                        f"with "
                        "teacher.pretrained/external; remove one")
    if t.pretrained:
        problems += _pretrained_problems(cfg)
    if t.external is not None:
        problems += _external_problems(cfg)
    if t.embedding and not t.pretrained:
        problems.append("teacher.embedding: only used with teacher.pretrained; remove it")
    tok = t.preprocessing.text.tokenizer if t.preprocessing.text is not None else None
    if tok is not None and not Path(tok).is_file():
        problems.append(f"teacher.preprocessing.text.tokenizer: file not found, got {show(tok)}")
    raw = t.pretrained or t.external is not None
    if raw and cfg.distill.cache == "off" and _distills_from_teacher(cfg):
        problems.append("distill.cache: a pretrained or external teacher reads raw records with its own "
                        "preprocessing, so distillation reads its outputs from the cache, got 'off'; use "
                        "auto or on")
    for line in dependency_problems(cfg):
        log.warning("%s (a run will stop here)", line)
    return problems


def _distills_from_teacher(cfg: Config) -> bool:
    from mmdistill.config.distill_checks import variant_teachers

    return "distill" in cfg.stages and any("teacher" in variant_teachers(cfg, v)
                                           for v in cfg.distill.students.values())


def missing_dependencies(cfg: Config) -> list[tuple[str, str, str]]:
    """``(PyPI package, mmdistill extra, config key and value that needs it)`` per missing package."""
    register_all()
    need: dict[str, str] = {}
    for m, enc in cfg.teacher.pretrained.items():
        if enc.name in PRETRAINED_ENCODERS:
            module = PRETRAINED_ENCODERS.entry(enc.name).meta.get("needs")
            if module:
                need[module] = f"teacher.pretrained.{m}.name: '{enc.name}'"
                if module == "livekit.wakeword":
                    need["onnxruntime"] = need[module]
    ext = cfg.teacher.external
    if ext is not None and ext.kind in ("huggingface", "onnx"):
        module = "transformers" if ext.kind == "huggingface" else "onnxruntime"
        need[module] = f"teacher.external.kind: '{ext.kind}'"
    return [(*EXTRAS[module], where) for module, where in need.items() if not available(module)]


def dependency_problems(cfg: Config) -> list[str]:
    """Optional packages the configured teacher needs but that are not installed, one line each."""
    return [f"{where} needs the optional package '{package}', which is not installed; "
            f"pip install 'mmdistill[{extra}]'" for package, extra, where in missing_dependencies(cfg)]


def require_dependencies(cfg: Config) -> None:
    """Raise before any data is read when the configured teacher's optional packages are missing.

    Raises:
        MissingDependencyError: naming every missing package, the config keys that need them and
            one ``pip install 'mmdistill[<extras>]'`` that installs them all.
    """
    from mmdistill.errors import MissingDependencyError

    missing = missing_dependencies(cfg)
    if missing:
        packages = ", ".join(dict.fromkeys(p for p, _, _ in missing))
        extras = ",".join(dict.fromkeys(e for _, e, _ in missing))
        wheres = "; ".join(dict.fromkeys(w for _, _, w in missing))
        raise MissingDependencyError(packages, extras, f"the configured teacher ({wheres})")
