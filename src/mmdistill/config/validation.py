"""Turn a raw config mapping into a :class:`Config`, reporting every problem at once.

Two passes, like torchtune's ``tune validate``: the schema pass (pydantic) checks types, ranges and
unknown keys; once it passes, the semantic pass checks what needs several fields or the outside
world (files exist, plugins import, registry names exist, modalities agree). Each problem is one
line ``<dotted.key>: <what is wrong>, got <value>; <fix>`` and all of them are raised together in
one :class:`~mmdistill.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mmdistill.config.schema import Config, ModelConfig
from mmdistill.errors import ConfigError

log = logging.getLogger(__name__)

BUILTIN_TASKS: tuple[str, ...] = ("parity",)
"""Extra label columns the built-in dataset offers (``data.tasks`` with ``source: builtin``)."""

_SHOW_MAX = 80  # characters of a received value shown in a message


def show(value: Any) -> str:
    """A short, readable rendering of a received value for error messages."""
    text = repr(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."


def suggest(name: str, choices: list[str], label: str = "available") -> str:
    """``"; did you mean 'x'? available: a, b, x"``, or ``"; available: a, b"`` with no close match."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    listing = f"{label}: {', '.join(choices) or '(none)'}"
    return f"; did you mean '{close[0]}'? {listing}" if close else f"; {listing}"


# ----------------------------------------------------------------------------- schema pass


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` so the container or model type shows."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config section (pydantic model) that ``loc`` points into, or None."""
    tp: Any = Config
    i = 0
    while i < len(loc):
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if origin in (list, dict):
            # A list index or dict key: step into the element / value type.
            tp = typing.get_args(tp)[-1]
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and loc[i] in tp.model_fields:
            tp = tp.model_fields[loc[i]].annotation
        else:
            return None
        i += 1
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def dotted(loc: tuple[Any, ...]) -> str:
    """``('teacher', 'train', 'lr')`` → ``teacher.train.lr``; list indices as ``stages[2]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue  # pydantic marks an invalid dict key; the key itself is already in the path
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_TYPE_MESSAGES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string (quote it in YAML)",
    "list_type": "must be a list, e.g. [a, b]",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "string_too_short": "must not be empty",
}


def _pydantic_problem(err: Mapping[str, Any]) -> str:
    """One pydantic error dict → one line in mmdistill's format."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    got = err.get("input")
    if kind == "missing":
        return f"{dotted(loc)}: required key is missing; add it"
    if kind == "extra_forbidden":
        section = _section_at(loc[:-1])
        valid = list(section.model_fields) if section else []
        return f"{dotted(loc)}: unknown key{suggest(str(loc[-1]), valid, 'valid keys')}"
    if "[key]" in loc:
        return f"{dotted(loc)}: key must be one of {ctx.get('expected', '?')}, got {show(got)}"
    if kind == "value_error":
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        return f"{dotted(loc)}: {msg}, got {show(got)}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"{dotted(loc)}: must be {bounds[kind]} {limit}, got {show(got)}"
    if kind == "literal_error":
        return f"{dotted(loc)}: must be one of {ctx.get('expected', '?')}, got {show(got)}"
    if kind in _TYPE_MESSAGES:
        return f"{dotted(loc)}: {_TYPE_MESSAGES[kind]}, got {show(got)}"
    msg = str(err.get("msg", "invalid value"))
    return f"{dotted(loc)}: {msg[:1].lower()}{msg[1:]}, got {show(got)}"


def schema_problems(exc: ValidationError) -> list[str]:
    """Every pydantic error of ``exc`` as a line ``key: problem, got value``."""
    return [_pydantic_problem(e) for e in exc.errors()]


def parse_config(data: Mapping[str, Any]) -> Config:
    """Schema pass only: ``data`` → :class:`Config`, or :class:`ConfigError` listing every problem."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"(top level): must be a mapping of keys to values, got {show(data)}")
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(schema_problems(exc)) from None


# ----------------------------------------------------------------------------- semantic pass


def _import_optional(module: str) -> types.ModuleType | None:
    """Import ``module``, or None while the models package does not provide it yet.

    The model registries and presets are written in parallel with this module; until they exist
    the registry checks are skipped rather than failing every config. A missing module outside
    ``mmdistill.models`` (or an error inside an existing one) still raises.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("mmdistill.models"):
            log.debug("skipping registry checks: %s is not available (%s)", module, exc)
            return None
        raise


def _plugin_problems(cfg: Config) -> list[str]:
    problems = []
    for i, module in enumerate(cfg.plugins):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            problems.append(
                f"plugins[{i}]: cannot import '{module}' ({exc}); check the module name and that its "
                "package is installed or on PYTHONPATH"
            )
        except Exception as exc:  # noqa: BLE001 - user plugin code may raise anything at import
            problems.append(f"plugins[{i}]: importing '{module}' raised {type(exc).__name__}: {exc}")
    return problems


def _shards_problems(cfg: Config) -> list[str]:
    d = cfg.data
    if d.source != "shards":
        if d.shards is None:
            return []
        return [f"data.shards: only used when data.source is 'shards', got {show(d.shards)}; remove it or "
                "set data.source: shards"]
    if d.shards is None:
        return ["data.shards: required when data.source is 'shards'; set it to the folder written by "
                "`mmdistill data pack MANIFEST OUT`"]
    folder = Path(d.shards)
    if not (folder / "index.json").is_file():
        what = "folder not found" if not folder.is_dir() else "no index.json in it (not a finished pack)"
        return [f"data.shards: {what}, got {show(d.shards)}; point it at the OUT folder of `mmdistill data "
                "pack` (relative paths resolve against the config file's folder)"]
    if d.classes is not None:
        return [f"data.classes: not used with data.source: shards (the classes are fixed in the shards' "
                f"index.json), got {show(d.classes)}; remove it"]
    return []


def _stream_problems(cfg: Config) -> list[str]:
    """``data.stream`` streams the train split of a shard folder; what it cannot serve is refused."""
    d = cfg.data
    if not d.stream:
        return []
    if d.source != "shards":
        return [f"data.stream: needs data.source: shards (a folder written by `mmdistill data pack`), got "
                f"data.source {show(d.source)}; pack the manifest and set data.source: shards, or remove "
                "data.stream"]
    problems = []
    if d.limit is not None:
        problems.append(f"data.limit: not supported with data.stream: true, got {show(d.limit)}; pack fewer "
                        "rows, or set data.limit: null")
    return problems


def _data_problems(cfg: Config) -> list[str]:
    d = cfg.data
    problems = []
    if d.source == "manifest":
        if d.manifest is None:
            problems.append(
                "data.manifest: required when data.source is 'manifest'; set it to a CSV or JSONL manifest"
            )
        elif not Path(d.manifest).is_file():
            problems.append(
                f"data.manifest: file not found, got {show(d.manifest)}; check the path (relative paths "
                "resolve against the config file's folder)"
            )
    elif d.manifest is not None:
        problems.append(
            f"data.manifest: only used when data.source is 'manifest', got {show(d.manifest)}; remove it "
            "or set data.source: manifest"
        )
    problems += _shards_problems(cfg) + _stream_problems(cfg)
    if d.source == "builtin":
        for i, task in enumerate(d.tasks):
            if task not in BUILTIN_TASKS:
                problems.append(
                    f"data.tasks[{i}]: the built-in dataset has no task {show(task)}"
                    f"{suggest(task, list(BUILTIN_TASKS))}"
                )
        if d.classes is not None:
            problems.append(
                f"data.classes: only used with data.source: manifest, got {show(d.classes)}; remove it "
                "(the built-in dataset has fixed classes)"
            )
    dup = sorted({t for t in d.tasks if d.tasks.count(t) > 1})
    if dup:
        problems.append(f"data.tasks: lists {', '.join(dup)} more than once; list each task once")
    if "label" in d.tasks:
        problems.append(
            "data.tasks: 'label' is the primary task and always trained; remove it from data.tasks"
        )
    for key in d.task_weights:
        if key != "label" and key not in d.tasks:
            problems.append(
                f"data.task_weights.{key}: not a task of this run{suggest(key, ['label', *d.tasks], 'tasks')}"
            )
    if d.classes is not None:
        if not d.classes:
            problems.append("data.classes: must list at least two classes, or be null to infer them")
        dup = sorted({c for c in d.classes if d.classes.count(c) > 1})
        if dup:
            problems.append(f"data.classes: lists {', '.join(dup)} more than once; list each class once")
    nyquist = d.audio.sample_rate / 2
    if d.audio.f_max is not None and d.audio.f_max > nyquist:
        problems.append(
            f"data.audio.f_max: must be <= sample_rate / 2 = {nyquist:g} Hz, got {d.audio.f_max:g}; "
            "lower it or leave it null (= sample_rate / 2)"
        )
    top = d.audio.f_max if d.audio.f_max is not None else nyquist
    if d.audio.f_min >= top:
        problems.append(f"data.audio.f_min: must be < f_max ({top:g} Hz), got {d.audio.f_min:g}")
    clip = d.audio.sample_rate * d.audio.max_seconds
    if d.audio.n_fft > clip:
        problems.append(
            f"data.audio.n_fft: longer than the clip ({clip:g} samples), got {d.audio.n_fft}; "
            "lower n_fft or raise max_seconds"
        )
    return problems


def _checkpoint_problems(key: str, checkpoint: str) -> list[str]:
    path = Path(checkpoint)
    if not path.is_dir():
        return [
            f"{key}: checkpoint folder not found, got {show(checkpoint)}; point it at a folder holding "
            "model.json and model.safetensors (relative paths resolve against the config file's folder)"
        ]
    missing = [f for f in ("model.json", "model.safetensors") if not (path / f).is_file()]
    if missing:
        return [
            f"{key}: checkpoint folder {show(checkpoint)} lacks {', '.join(missing)}; save it with mmdistill"
        ]
    return []


def _kwargs_problems(key: str, kind: str, name: str, obj: Any, kwargs: Mapping[str, Any]) -> list[str]:
    """Unknown constructor arguments, caught now instead of at build time after data loading."""
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return []  # builtins without a signature: the build will tell
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    accepted = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    return [
        f"{key}.kwargs.{arg}: {kind} '{name}' takes no argument '{arg}'{suggest(arg, accepted, 'accepted')}"
        for arg in kwargs
        if arg not in accepted
    ]


def _model_problems(section: str, model: ModelConfig, cfg: Config, regs: dict[str, Any] | None) -> list[str]:
    problems = []
    data_mods = cfg.data.modalities
    mods = model.modalities if model.modalities is not None else data_mods
    extra = [m for m in mods if m not in data_mods]
    if extra:
        problems.append(
            f"{section}.modalities: {', '.join(extra)} not in data.modalities ({', '.join(data_mods)}), "
            f"got {show(model.modalities)}; use a subset of data.modalities"
        )
    for m in model.encoders:
        if m not in mods:
            log.warning("%s.encoders.%s is ignored: the model does not read '%s'", section, m, m)
    if model.checkpoint is not None:
        problems += _checkpoint_problems(f"{section}.checkpoint", model.checkpoint)
    if regs is None:
        return problems
    presets = regs.get("presets")
    if presets is not None and model.preset not in presets:
        problems.append(_unknown(f"{section}.preset", "preset", model.preset, presets))
    parts: list[tuple[str, str, Any]] = [
        (f"{section}.encoders.{m}", "encoders", c) for m, c in model.encoders.items()
    ]
    parts += [(f"{section}.{p}", f"{p}s", getattr(model, p)) for p in ("fusion", "head") if getattr(model, p)]
    for key, reg_name, comp in parts:
        registry = regs.get(reg_name)
        if registry is None:
            continue
        if comp.name not in registry:
            problems.append(_unknown(f"{key}.name", registry.kind, comp.name, registry))
            continue
        entry = registry.entry(comp.name)
        modality = entry.meta.get("modality")
        if reg_name == "encoders" and modality is not None and modality != key.rsplit(".", 1)[-1]:
            problems.append(
                f"{key}.name: encoder '{comp.name}' reads {modality}, not {key.rsplit('.', 1)[-1]}; "
                f"pick a {key.rsplit('.', 1)[-1]} encoder (see `mmdistill list encoders`)"
            )
        problems += _kwargs_problems(key, registry.kind, comp.name, entry.obj, comp.kwargs)
    return problems


def _unknown(key: str, kind: str, name: str, container: Any) -> str:
    if hasattr(container, "unknown_message"):
        return str(container.unknown_message(name, key=key))
    return f"{key}: unknown {kind} {show(name)}{suggest(name, sorted(container))}"


def _registries() -> dict[str, Any] | None:
    """The encoder/fusion/head registries and presets, populated, or None while not written yet."""
    regs_mod = _import_optional("mmdistill.models.registries")
    if regs_mod is None:
        return None
    builders = _import_optional("mmdistill.models.builders")
    if builders is None and hasattr(regs_mod, "register_all"):
        try:
            regs_mod.register_all()
        except ModuleNotFoundError as exc:
            if exc.name is None or not exc.name.startswith("mmdistill.models"):
                raise
            log.debug("skipping registry checks: %s", exc)
            return None
    return {
        "encoders": regs_mod.ENCODERS,
        "fusions": regs_mod.FUSIONS,
        "heads": regs_mod.HEADS,
        "presets": getattr(builders, "PRESETS", None),
    }


def semantic_problems(cfg: Config, *, check_registries: bool = True) -> list[str]:
    """Every cross-field, file-system, plugin and registry problem of a schema-valid ``cfg``."""
    problems = _plugin_problems(cfg)
    problems += _data_problems(cfg)
    regs = _registries() if check_registries else None
    for section in ("teacher", "student"):
        problems += _model_problems(section, getattr(cfg, section), cfg, regs)
    presets = regs.get("presets") if regs else None
    if presets is not None and cfg.baselines.preset not in presets:
        problems.append(_unknown("baselines.preset", "preset", cfg.baselines.preset, presets))
    for i, subset in enumerate(cfg.baselines.subsets):
        extra = [m for m in subset if m not in cfg.data.modalities]
        if extra:
            problems.append(f"baselines.subsets[{i}]: {subset} names {', '.join(extra)}, which the data does "
                            f"not have (data.modalities = {cfg.data.modalities}); list subsets of the data's "
                            "modalities")
    if check_registries:
        from mmdistill.config.distill_checks import distill_problems
        from mmdistill.teachers.checks import teacher_problems

        problems += teacher_problems(cfg)

        problems += distill_problems(cfg, lambda key, model, c: _model_problems(key, model, c, regs))
    from mmdistill.config.compress_checks import compress_problems

    problems += compress_problems(cfg)
    if cfg.eval.latency and not cfg.eval.latency_batch_sizes:
        problems.append(
            "eval.latency_batch_sizes: must list at least one batch size when eval.latency is true"
        )
    return problems


def validate_config(cfg: Config, *, check_registries: bool = True) -> Config:
    """Run the semantic pass on ``cfg``; raise :class:`ConfigError` with every problem, else return it."""
    problems = semantic_problems(cfg, check_registries=check_registries)
    if problems:
        raise ConfigError(problems)
    return cfg
