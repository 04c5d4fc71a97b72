"""Policy resolution, tunable bounds and --set parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedagent.errors import ConfigError, PolicyNotFound, TunableError
from schedagent.policy.repo import PolicySource, load_meta, parse_overrides, resolve

YAML = """\
name: demo
summary: a demo policy
intent: testing
good_for: [throughput]
tunables:
  slice_ns: {type: u64, unit: ns, default: 5000000, min: 100000, max: 100000000,
             description: time slice}
"""


def _repo(tmp_path: Path, text: str = YAML) -> Path:
    d = tmp_path / "demo"
    d.mkdir()
    (d / "policy.yaml").write_text(text)
    (d / "demo.bpf.c").write_text("/* source */\n")
    return tmp_path


def test_resolve_by_name_and_bounds(tmp_path: Path) -> None:
    policy = resolve("demo", _repo(tmp_path))
    assert policy.meta is not None and policy.source.name == "demo.bpf.c"
    assert policy.resolve_tunables({}) == {"slice_ns": 5000000}
    assert policy.resolve_tunables({"slice_ns": 200000}) == {"slice_ns": 200000}
    with pytest.raises(TunableError, match=r"outside \[100000, 100000000\]"):
        policy.resolve_tunables({"slice_ns": 1})
    with pytest.raises(TunableError, match="unknown tunable; demo has: slice_ns"):
        policy.resolve_tunables({"slice": 1})


def test_unknown_policy_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(PolicyNotFound) as caught:
        resolve("nope", _repo(tmp_path))
    assert caught.value.known == ["demo"] and "demo" in str(caught.value)


def test_malformed_yaml_and_schema_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_meta(bad)
    bad.write_text(YAML.replace("default: 5000000", "default: 1"))
    with pytest.raises(ConfigError, match="outside"):
        load_meta(bad)
    bad.write_text(YAML + "colour: blue\n")
    with pytest.raises(ConfigError, match="colour"):
        load_meta(bad)


def test_name_must_match_directory(tmp_path: Path) -> None:
    root = _repo(tmp_path, YAML.replace("name: demo", "name: other"))
    with pytest.raises(ConfigError, match="must equal the directory name"):
        resolve("demo", root)


def test_bare_source_file_has_no_metadata(tmp_path: Path) -> None:
    src = tmp_path / "mine.bpf.c"
    src.write_text("x")
    policy = resolve(str(src), tmp_path)
    assert isinstance(policy, PolicySource) and policy.meta is None and policy.name == "mine"
    assert policy.resolve_tunables({"anything": 3}) == {"anything": 3}


def test_parse_overrides() -> None:
    assert parse_overrides(["a=1", "b=0x10", "c=true", "d=1_000"]) == {
        "a": 1,
        "b": 16,
        "c": 1,
        "d": 1000,
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["novalue"])
    with pytest.raises(TunableError, match="not an integer"):
        parse_overrides(["a=fast"])
