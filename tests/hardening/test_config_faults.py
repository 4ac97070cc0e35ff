"""Config faults through load_config: every one is a ConfigError naming the file (line, column) or
the key path, the value and the fix; YAML never runs code and alias bombs are refused fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _corpus import laughs

from mmdistill.config.loading import load_config, parse_override
from mmdistill.config.safe_yaml import MAX_YAML_VALUES
from mmdistill.errors import ConfigError


def problems(tmp_path: Path, text: str | bytes, *overrides: str) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return info.value.problems


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/new:os.system ['touch {marker}']",
        "!!python/name:os.system",
        "!!python/module:os",
        "!!python/object:pathlib.Path {{}}",
        "!shell 'touch {marker}'",
    ],
)
def test_yaml_tags_never_run_code(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    value = tag.format(marker=marker)
    [msg] = problems(tmp_path, f"name: demo\nseed: {value}\n")
    shown = value.split(" ")[0]
    assert msg == (
        f"{tmp_path / 'c.yaml'}:2:7: YAML tag '{shown}' is not allowed; configs are plain data read "
        "with yaml.safe_load. Remove the tag (to add your own code, list its module under 'plugins')"
    )
    assert not marker.exists()


def test_billion_laughs_is_refused_in_linear_time(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    [msg] = problems(tmp_path, laughs(9))  # 10**9 values once expanded
    assert time.perf_counter() - t0 < 2.0
    assert msg.startswith(f"{tmp_path / 'c.yaml'}:")
    assert msg.endswith(
        f"the aliases (*name) here expand to more than {MAX_YAML_VALUES:,} values (a 'billion "
        "laughs' bomb?); write the values out"
    )
    assert (
        "expand to more than" in problems(tmp_path, laughs(6, key="data"))[0]
    )  # 10**6 is over the limit too


def test_recursive_anchors_are_refused(tmp_path: Path) -> None:
    for text in ("plugins: &a [*a]\n", "data: &d {text: *d}\n"):
        [msg] = problems(tmp_path, text)
        assert msg.startswith(f"{tmp_path / 'c.yaml'}:1:") and "contains an alias to itself" in msg


def test_plain_aliases_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "teacher:\n  train: &train {epochs: 1, lr: 0.01, patience: null}\n"
        "student:\n  train:\n    <<: *train\n    lr: 0.02\n"
    )
    (tmp_path / "ok.yaml").write_text(text)
    cfg = load_config(tmp_path / "ok.yaml")
    assert cfg.student.train.epochs == 1 and cfg.student.train.lr == 0.02 and cfg.teacher.train.lr == 0.01


# name -> (YAML text, the expected problem line (or its start))
SYNTAX = {
    "unclosed_bracket": (
        "data: {batch_size: 3\nseed: 1\n",
        ":2:5: invalid YAML: expected ',' or '}', but got ':' "
        "(while parsing a flow mapping); fix the syntax at that line and column",
    ),
    "tab_indent": (
        "data:\n\tbatch_size: 3\n",
        ":2:1: invalid YAML: found character '\\t' that cannot start any token",
    ),
    "bad_indent": ("data:\n  batch_size: 3\n modalities: [image]\n", ":3:2: invalid YAML: "),
    "duplicate_key": ("seed: 1\nseed: 2\n", ":2:1: duplicate key 'seed'; keep one of them"),
    "unhashable_key": ("? [a, b]\n: 1\n", ":1:3: found unhashable key"),
    "two_documents": ("seed: 1\n---\nseed: 2\n", ":2:1: invalid YAML: but found another document"),
    "deep_nesting": ("seed: " + "[" * 5000 + "]" * 5000 + "\n", ": unreadable YAML (nested too deeply: "),
    "huge_int": ("seed: " + "9" * 5000 + "\n", ": unreadable YAML (Exceeds the limit (4300 digits)"),
    "nul_byte": ("seed: 1\x00\n", ": invalid YAML: unacceptable character #x0000"),
    "top_level_list": ("- a\n- b\n", ": the top level must be a mapping of keys to values, got ['a', 'b']"),
}


@pytest.mark.parametrize("case", sorted(SYNTAX))
def test_syntax_faults_name_the_file_and_place(tmp_path: Path, case: str) -> None:
    text, expected = SYNTAX[case]
    [msg] = problems(tmp_path, text)
    assert msg.startswith(f"{tmp_path / 'c.yaml'}{expected}"), msg


def test_non_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    assert problems(tmp_path, b"name: demo\nseed: \xff\n") == [
        f"{tmp_path / 'c.yaml'}:2: byte 0xff is not UTF-8; save the file as UTF-8"
    ]


def test_bom_and_crlf_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_bytes(b"\xef\xbb\xbfseed: 3\r\ndata:\r\n  batch_size: 4\r\n")
    cfg = load_config(path)
    assert cfg.seed == 3 and cfg.data.batch_size == 4


def test_wrong_types_and_unknown_keys_are_all_reported_with_key_and_value(tmp_path: Path) -> None:
    text = (
        "seed: abc\ndata: {batch_size: many, batchsize: 3, modalities: image}\n"
        "teacher: {train: {lr: .nan, epochs: .inf}}\nbogus: 1\n"
    )
    got = problems(tmp_path, text)
    assert "seed: must be an integer, got 'abc'" in got
    assert "data.batch_size: must be an integer, got 'many'" in got
    assert "data.modalities: must be a list, e.g. [a, b], got 'image'" in got
    assert any(p.startswith("data.batchsize: unknown key; did you mean 'batch_size'?") for p in got)
    assert "teacher.train.lr: must be > 0, got nan" in got
    assert "teacher.train.epochs: input should be a finite number, got inf" in got
    assert any(p.startswith("bogus: unknown key; valid keys: name, seed,") for p in got)
    assert problems(tmp_path, "data: 5\n") == ["data: must be a mapping of keys to values, got 5"]
    assert problems(tmp_path, "1: x\n") == ["[1]: keys should be strings, got 1"]


def test_unknown_registry_names_get_a_did_you_mean(tmp_path: Path) -> None:
    text = (
        "teacher: {preset: teachr}\nstudent: {fusion: {name: concatt}}\n"
        "distill: {students: {kd: {strategy: logit_kdd}}}\n"
    )
    got = problems(tmp_path, text)
    assert any(p.startswith("teacher.preset: unknown preset 'teachr'; did you mean 'teacher'?") for p in got)
    assert any(
        p.startswith("student.fusion.name: unknown fusion 'concatt'; did you mean 'concat'?") for p in got
    )
    assert any(
        p.startswith("distill.students.kd.strategy: unknown strategy 'logit_kdd'; did you mean 'logit_kd'?")
        for p in got
    )


@pytest.mark.parametrize(
    "value, piece",
    [
        ("9" * 5000, "Exceeds the limit (4300 digits)"),
        ("[" * 5000, "nested too deeply"),
        ("!!python/object/apply:os.system [true]", "could not determine a constructor"),
        ("&a [*a]", "contains an alias to itself"),
    ],
)
def test_bad_override_values_are_config_errors(value: str, piece: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_override(f"seed={value}")
    [msg] = info.value.problems
    assert msg.startswith(f"override 'seed={value[:20]}") and piece in msg and "quote it, e.g. seed=" in msg
