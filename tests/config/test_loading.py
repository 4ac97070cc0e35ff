"""YAML loading, packaged configs, overrides and path resolution of mmdistill.config.loading."""

from __future__ import annotations

from pathlib import Path

import pytest

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
from mmdistill.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_none_loads_the_packaged_demo() -> None:
    assert find_config(None) == packaged_config_dir() / "default.yaml"
    cfg = load_config(None, check=False)
    assert cfg.name == "demo"


@pytest.mark.parametrize("name", ["smoke", "smoke.yaml"])
def test_packaged_name_is_found_when_no_such_file(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(name) == packaged_config_dir() / "smoke.yaml"
    assert {"default", "smoke", "multitask"} <= set(packaged_configs())


def test_existing_file_wins_over_packaged_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "smoke.yaml", "name: mine\n")
    assert load_config("smoke.yaml", check=False).name == "mine"


def test_missing_config_lists_packaged_names() -> None:
    with pytest.raises(ConfigError) as info:
        find_config("no/such/file.yaml")
    assert "no/such/file.yaml" in str(info.value) and "smoke" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("teacher.train.epochs=3", "teacher.train.epochs", 3),
        ("logging.quiet=true", "logging.quiet", True),
        ("data.modalities=[image,text]", "data.modalities", ["image", "text"]),
        ("data.limit=null", "data.limit", None),
        ("name=run 1", "name", "run 1"),
        ("teacher.train.lr=1.0e-4", "teacher.train.lr", 1e-4),
        ("name='123'", "name", "123"),
    ],
)
def test_override_values_are_parsed_as_yaml(text: str, key: str, value: object) -> None:
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("text", ["teacher.train.epochs", "=3", "a..b=1", "data limit=3"])
def test_malformed_override_names_itself_and_the_fix(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_override(text)
    msg = str(info.value)
    assert repr(text) in msg and "KEY=VALUE" in msg and "teacher.train.epochs=3" in msg


def test_override_with_bad_yaml_value_says_to_quote() -> None:
    with pytest.raises(ConfigError, match=r"override 'data.modalities=\[image'.*not valid YAML.*quote"):
        parse_override("data.modalities=[image")


def test_overrides_apply_nested_and_create_sections() -> None:
    data = {"teacher": {"train": {"epochs": 8}}}
    apply_overrides(data, ["teacher.train.epochs=2", "student.train.lr=0.1", "seed=7"])
    assert data == {"teacher": {"train": {"epochs": 2}}, "student": {"train": {"lr": 0.1}}, "seed": 7}


def test_override_below_a_scalar_is_refused() -> None:
    with pytest.raises(ConfigError, match="seed is 3, not a section"):
        apply_overrides({"seed": 3}, ["seed.x=1"])


def test_load_config_applies_overrides_after_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "name: a\nteacher:\n  train: {epochs: 5, lr: 0.1}\n")
    cfg = load_config(path, ["teacher.train.epochs=2", "data.batch_size=8"], check=False)
    assert (cfg.name, cfg.teacher.train.epochs, cfg.teacher.train.lr, cfg.data.batch_size) == ("a", 2, 0.1, 8)


def test_python_tag_is_refused_with_file_and_line(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write(
        tmp_path / "evil.yaml",
        f"name: x\nseed: !!python/object/apply:os.system ['touch {marker}']\n",
    )
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    msg = str(info.value)
    assert f"{path}:2:" in msg and "!!python/object/apply:os.system" in msg and "not allowed" in msg
    assert not marker.exists()


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.yaml", "name: x\ndata:\n  batch_size: [1, 2\n  limit: 3\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    msg = str(info.value)
    assert f"{path}:4:" in msg and "invalid YAML" in msg


def test_duplicate_keys_are_an_error_not_last_one_wins(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.yaml", "seed: 1\ndata:\n  limit: 3\n  limit: 4\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:4:3: duplicate key 'limit'"):
        read_yaml(path)


def test_top_level_must_be_a_mapping_and_empty_file_is_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_yaml(_write(tmp_path / "list.yaml", "- a\n- b\n"))
    assert load_config(_write(tmp_path / "empty.yaml", ""), check=False).name == "demo"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch) -> None:
    sub = tmp_path / "cfgs"
    sub.mkdir()
    text = "data: {source: manifest, manifest: ../data/m.csv}\nteacher: {checkpoint: ckpt}\n"
    path = _write(sub / "c.yaml", text)
    elsewhere = tmp_path / "else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path, check=False)
    assert cfg.data.manifest == str(tmp_path / "data" / "m.csv")
    assert cfg.teacher.checkpoint == str(sub / "ckpt")
    # A path typed on the command line is relative to where the user stands.
    cfg = load_config(path, ["student.checkpoint=s"], check=False)
    assert cfg.student.checkpoint == str(elsewhere / "s")


def test_config_from_dict_does_not_modify_its_input(tmp_path: Path) -> None:
    data = {"data": {"source": "manifest", "manifest": "m.csv"}}
    cfg = config_from_dict(data, base_dir=tmp_path, check=False)
    assert cfg.data.manifest == str(tmp_path / "m.csv")
    assert data["data"]["manifest"] == "m.csv"


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    cfg = load_config("multitask", ["data.limit=100", "student.modalities=[image, audio]"], check=False)
    text = resolved_yaml(cfg)
    assert text.startswith("# mmdistill ")
    again = load_config(_write(tmp_path / "r.yaml", text), check=False)
    assert again == cfg


def test_teacher_model_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch) -> None:
    sub = tmp_path / "cfgs"
    sub.mkdir()
    text = ("teacher:\n  pretrained: {audio: {name: speech_embedding, path: models/speech},"
            " text: {name: hf_text, path: ../hf}}\n"
            "  preprocessing: {text: {tokenizer: tok/tokenizer.json}}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_write(sub / "c.yaml", text), check=False)
    assert cfg.teacher.pretrained["audio"].path == str(sub / "models" / "speech")
    assert cfg.teacher.pretrained["text"].path == str(tmp_path / "hf")
    assert cfg.teacher.preprocessing.text.tokenizer == str(sub / "tok" / "tokenizer.json")
    external = _write(sub / "e.yaml", "teacher: {external: {kind: onnx, path: t.onnx}}\n")
    assert load_config(external, check=False).teacher.external.path == str(sub / "t.onnx")
    # On the command line: relative to the current folder.
    cfg = load_config(external, ["teacher.external.path=u.onnx"], check=False)
    assert cfg.teacher.external.path == str(tmp_path / "u.onnx")
