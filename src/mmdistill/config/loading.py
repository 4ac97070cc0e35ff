"""Load a YAML config (a file or a packaged template), apply ``key=value`` overrides, validate.

YAML is read with a :class:`yaml.SafeLoader` subclass only
(:class:`~mmdistill.config.safe_yaml.StrictSafeLoader`): tags such as ``!!python/object`` are
refused with the file and line, never executed; so are duplicate keys, recursive aliases and alias
bombs. Relative paths in the file (``data.manifest``, ``teacher.checkpoint``, ``student.checkpoint``)
resolve against the file's folder; relative paths given as command-line overrides resolve against
the current folder, as a shell user expects.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import mmdistill
from mmdistill.config.safe_yaml import StrictSafeLoader
from mmdistill.config.schema import Config
from mmdistill.config.validation import parse_config, show, validate_config
from mmdistill.errors import ConfigError

PATH_KEYS: tuple[str, ...] = (
    "data.manifest", "data.shards", "teacher.checkpoint", "student.checkpoint", "teacher.external.path",
    "teacher.preprocessing.text.tokenizer", "teacher.pretrained.image.path", "teacher.pretrained.text.path",
    "teacher.pretrained.audio.path",
)
"""Config keys holding file-system paths, stored as absolute paths after loading."""

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
_TAG_RE = re.compile(r"tag '([^']+)'")


def packaged_config_dir() -> Path:
    """The folder of the YAML templates shipped inside the package (``mmdistill/configs``)."""
    # mmdistill is installed as plain files (wheel or editable), never zipped, so this is a Path.
    return Path(str(importlib.resources.files(mmdistill).joinpath("configs")))


def packaged_configs() -> list[str]:
    """Names of the packaged configs (``default``, ``smoke``, ``sub/name``), found recursively."""
    root = packaged_config_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def find_config(path: str | Path | None) -> Path:
    """The config file for ``path``: an existing file, else a packaged name like ``smoke``.

    Args:
        path: a file path, a packaged config name (with or without ``.yaml``), or None for the
            packaged ``default.yaml``.

    Raises:
        ConfigError: neither a file nor a packaged config has that name.
    """
    if path is None:
        return packaged_config_dir() / "default.yaml"
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate.resolve()
    if candidate.is_dir():
        raise ConfigError(f"config: {show(str(path))} is a folder; pass a .yaml file")
    root = packaged_config_dir()
    name = str(path).removesuffix(".yaml").removesuffix(".yml")
    packaged = root / f"{name}.yaml"
    if packaged.is_file():
        return packaged
    raise ConfigError(
        f"config: file not found, got {show(str(path))}; pass an existing YAML file or a packaged "
        f"config name ({', '.join(packaged_configs())})"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse ``path`` as plain-data YAML; errors name the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: byte 0x{exc.object[exc.start]:02x} is not UTF-8; save the file as "
                          "UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    try:
        data = yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(_yaml_message(path, exc, constructor=True)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_message(path, exc, constructor=False)) from None
    except (RecursionError, ValueError) as exc:  # nesting too deep for the parser; an int of 4300+ digits
        raise ConfigError(f"{path}: unreadable YAML ({_plain_error(exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {show(data)}")
    return data


def _plain_error(exc: RecursionError | ValueError) -> str:
    deep = "nested too deeply: lists or mappings hundreds of levels inside each other; flatten it"
    return deep if isinstance(exc, RecursionError) else f"{exc}; quote the value to keep it as a string"


def _yaml_message(path: Path, exc: yaml.YAMLError, *, constructor: bool) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = str(getattr(exc, "problem", None) or exc)
    tag = _TAG_RE.search(problem)
    if constructor and tag:
        shown = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return (
            f"{where}: YAML tag '{shown}' is not allowed; configs are plain data read with yaml.safe_load. "
            "Remove the tag (to add your own code, list its module under 'plugins')"
        )
    if constructor:
        return f"{where}: {problem}"
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return f"{where}: invalid YAML: {detail}; fix the syntax at that line and column"


def parse_override(text: str) -> tuple[str, Any]:
    """``"teacher.train.lr=1e-3"`` → ``("teacher.train.lr", 0.001)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY_RE.match(key):
        raise ConfigError(
            f"override {show(text)}: expected KEY=VALUE with a dotted key, e.g. teacher.train.epochs=3"
        )
    try:
        value = yaml.load(raw, Loader=StrictSafeLoader) if raw.strip() else None  # noqa: S506 - safe
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        reason = str(getattr(exc, "problem", None) or exc).strip() if isinstance(exc, yaml.YAMLError) \
            else _plain_error(exc)
        raise ConfigError(
            f"override {show(text)}: the value {show(raw)} is not valid YAML ({reason}); "
            f"quote it, e.g. {key}='\"{raw}\"'"
        ) from None
    return key, value


def _set_dotted(data: dict[str, Any], key: str, value: Any, text: str) -> None:
    node = data
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"override {show(text)}: {where} is {show(child)}, not a section, "
                f"so it has no key '{parts[depth + 1]}'"
            )
        node = child
    node[parts[-1]] = value


def _get_dotted(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _resolve_path_keys(data: dict[str, Any], base: Path, keys: Sequence[str] = PATH_KEYS) -> None:
    for key in keys:
        value = _get_dotted(data, key)
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            _set_dotted(data, key, str(path if path.is_absolute() else (base / path).resolve()), key)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides to ``data`` in place (paths resolve against the current folder)."""
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value, text)
        if key in PATH_KEYS:
            _resolve_path_keys(data, Path.cwd(), keys=(key,))
    return data


def config_from_dict(
    data: Mapping[str, Any], *, base_dir: str | Path | None = None, check: bool = True
) -> Config:
    """Validate a plain mapping (as read from YAML) into a :class:`Config`.

    Args:
        data: the config mapping; not modified.
        base_dir: folder that relative paths resolve against (default: the current folder).
        check: also run the semantic pass (files, plugins, registries), not only the schema.

    Raises:
        ConfigError: every problem found, one line each.
    """
    copy = _deep_copy(data)
    if isinstance(copy, dict):
        _resolve_path_keys(copy, Path(base_dir) if base_dir is not None else Path.cwd())
    cfg = parse_config(copy)
    return validate_config(cfg) if check else cfg


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] = (), *, check: bool = True
) -> Config:
    """Load, override and validate a config.

    Args:
        path: a YAML file, a packaged config name (``smoke``, ``default.yaml``) or None for the
            packaged demo config.
        overrides: ``dotted.key=value`` strings applied after the file, values parsed as YAML
            (``3``, ``true``, ``[image, text]``, ``null``).
        check: also run the semantic pass (files exist, plugins import, registry names exist).

    Returns:
        The validated config, with absolute ``data.manifest`` and ``*.checkpoint`` paths.

    Raises:
        ConfigError: the file is missing or not plain YAML, an override is malformed, or the
            config has problems (all of them listed).
    """
    file = find_config(path)
    data = read_yaml(file)
    _resolve_path_keys(data, file.parent)
    apply_overrides(data, overrides)
    cfg = parse_config(data)
    return validate_config(cfg) if check else cfg


def resolved_yaml(cfg: Config) -> str:
    """The full config with every default filled in, as YAML (``config.resolved.yaml``)."""
    header = f"# mmdistill {mmdistill.__version__}: the resolved configuration of this run\n"
    body = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None, width=100)
    return header + body


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
