"""`data.stream`: only with `data.source: shards`, and what it cannot serve is refused by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmdistill.config.loading import config_from_dict
from mmdistill.errors import ConfigError


def _problems(data: dict, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, **kwargs)
    return info.value.problems


def test_stream_needs_shards() -> None:
    for source in ("builtin", "manifest"):
        problems = _problems({"data": {"source": source, "stream": True}})
        assert [p for p in problems if p.startswith("data.stream")] == [
            f"data.stream: needs data.source: shards (a folder written by `mmdistill data pack`), got "
            f"data.source '{source}'; pack the manifest and set data.source: shards, or remove data.stream"
        ]


def test_stream_refuses_limit(tmp_path: Path) -> None:
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "index.json").write_text("{}")
    data = {"source": "shards", "shards": "packed", "stream": True, "limit": 8}
    assert _problems({"data": data}, base_dir=tmp_path) == [
        "data.limit: not supported with data.stream: true, got 8; pack fewer rows, or set data.limit: null",
        "stages: ['compress', 'export'] read batches of the train split in memory (pruning's Taylor "
        "batches, quantization calibration), which data.stream: true does not keep; remove them from "
        "stages or set data.stream: false",
    ]
    cfg = config_from_dict({"data": {**data, "limit": None}, "stages": ["teacher", "distill", "evaluate"]},
                           base_dir=tmp_path)
    assert cfg.data.stream is True
    assert not config_from_dict({}).data.stream  # off by default
