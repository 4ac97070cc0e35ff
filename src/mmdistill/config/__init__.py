"""Configuration: the pydantic schema, YAML loading with overrides, and whole-config validation.

Typical use::

    from mmdistill.config import load_config
    cfg = load_config("my.yaml", ["teacher.train.epochs=3"])   # raises ConfigError listing every problem

This package never imports torch at import time (the CLI's ``--help`` must stay fast).
"""

from mmdistill.config.loading import (
    apply_overrides,
    config_from_dict,
    find_config,
    load_config,
    packaged_config_dir,
    packaged_configs,
    parse_override,
    read_yaml,
    resolved_yaml,
)
from mmdistill.config.schema import (
    STAGES,
    AudioConfig,
    BaselinesConfig,
    ComponentConfig,
    Config,
    DataConfig,
    EvalConfig,
    ImageConfig,
    LoggingConfig,
    ModelConfig,
    TextConfig,
    TrainConfig,
)
from mmdistill.config.validation import parse_config, semantic_problems, validate_config

__all__ = [
    "STAGES",
    "AudioConfig",
    "BaselinesConfig",
    "ComponentConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "ImageConfig",
    "LoggingConfig",
    "ModelConfig",
    "TextConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "find_config",
    "load_config",
    "packaged_config_dir",
    "packaged_configs",
    "parse_config",
    "parse_override",
    "read_yaml",
    "resolved_yaml",
    "semantic_problems",
    "validate_config",
]
