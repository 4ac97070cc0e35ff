"""`data.source: shards` / `data.shards`: path resolution and the checks of the new keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmdistill.config.loading import config_from_dict, load_config
from mmdistill.errors import ConfigError


def _problems(data: dict, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, **kwargs)
    return info.value.problems


def test_shards_path_resolves_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "index.json").write_text("{}")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("data: {source: shards, shards: packed}\n")
    cfg = load_config(cfg_file)
    assert cfg.data.source == "shards" and cfg.data.shards == str(tmp_path / "packed")


def test_shards_keys_are_checked(tmp_path: Path) -> None:
    assert _problems({"data": {"source": "shards"}}) == [
        "data.shards: required when data.source is 'shards'; set it to the folder written by "
        "`mmdistill data pack MANIFEST OUT`"
    ]
    (tmp_path / "empty").mkdir()
    empty = "no index.json in it (not a finished pack)"
    for name, what in (("missing", "folder not found"), ("empty", empty)):
        problems = _problems({"data": {"source": "shards", "shards": name}}, base_dir=tmp_path)
        assert problems == [
            f"data.shards: {what}, got '{tmp_path / name}'; point it at the OUT folder of `mmdistill data "
            "pack` (relative paths resolve against the config file's folder)"
        ]
    problems = _problems({"data": {"shards": "x"}}, base_dir=tmp_path)
    assert problems[0].startswith("data.shards: only used when data.source is 'shards'")
    (tmp_path / "empty" / "index.json").write_text("{}")
    problems = _problems({"data": {"source": "shards", "shards": "empty", "classes": ["a", "b"]}},
                         base_dir=tmp_path)
    assert problems == ["data.classes: not used with data.source: shards (the classes are fixed in the "
                        "shards' index.json), got ['a', 'b']; remove it"]
