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
    ]
    cfg = config_from_dict({"data": {**data, "limit": None}, "stages": ["teacher", "distill", "evaluate"]},
                           base_dir=tmp_path)
    assert cfg.data.stream is True
    assert not config_from_dict({}).data.stream  # off by default


def test_stream_accepts_compress_and_export(tmp_path: Path) -> None:
    """Pruning's Taylor batches, calibration and the export example read the train shards' first rows."""
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "index.json").write_text("{}")
    data = {"source": "shards", "shards": "packed", "stream": True, "limit": None}
    stages = ["teacher", "student", "distill", "compress", "export", "evaluate"]
    cfg = config_from_dict({"data": data, "stages": stages}, base_dir=tmp_path)
    assert cfg.data.stream is True and cfg.stages == stages


def test_stream_accepts_pretrained_and_external_teachers(tmp_path: Path) -> None:
    """Both raw-record teachers read the streamed train split in one chunked pass over the shards."""
    (tmp_path / "packed").mkdir()
    (tmp_path / "packed" / "index.json").write_text("{}")
    (tmp_path / "t.onnx").write_bytes(b"")
    data = {"source": "shards", "shards": "packed", "stream": True, "limit": None}
    for teacher in ({"modalities": ["text"], "pretrained": {"text": {"name": "minilm"}}},
                    {"modalities": ["text"], "external": {"kind": "onnx", "path": "t.onnx"}}):
        try:  # other keys may still be refused (a missing extra, a fake .onnx file); data.stream is not
            config_from_dict({"data": data, "teacher": teacher}, base_dir=tmp_path)
            problems: list[str] = []
        except ConfigError as e:
            problems = e.problems
        assert not [p for p in problems if p.startswith("data.stream")], teacher
