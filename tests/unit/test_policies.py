"""Issue 4: every built-in policy's YAML, source and header agree."""

from __future__ import annotations

import re

import pytest

from schedagent.policy.gate import check_source
from schedagent.policy.repo import POLICIES_DIR, builtin_names, resolve

NAMES = builtin_names()
_RODATA = re.compile(r"^const volatile (u64|u32|s64|s32|bool) (\w+)\s*=", re.MULTILINE)
_CTYPE = {"u64": "u64", "u32": "u32", "s64": "s64", "s32": "s32", "bool": "bool"}


def test_at_least_six_builtin_policies() -> None:
    assert len(NAMES) >= 6, NAMES
    assert {"fifo", "vtime", "latency", "batch", "target", "locality"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_yaml_tunables_match_rodata(name: str) -> None:
    policy = resolve(name)
    assert policy.meta is not None
    source = policy.source.read_text()
    rodata = {m.group(2): m.group(1) for m in _RODATA.finditer(source)}
    assert set(rodata) == set(policy.meta.tunables), (rodata, policy.meta.tunables)
    for key, tunable in policy.meta.tunables.items():
        assert _CTYPE[rodata[key]] == tunable.type, key
        default = re.search(rf"const volatile \w+ {key}\s*=\s*(\d+);", source)
        assert default is not None and int(default.group(1)) == tunable.default, key


@pytest.mark.parametrize("name", NAMES)
def test_ops_name_and_stem_match_directory(name: str) -> None:
    source = (POLICIES_DIR / name / f"{name}.bpf.c").read_text()
    assert check_source(source).ops_name == name
    assert f"struct sched_ext_ops {name}_ops = {{" in source
    callbacks = re.findall(r"SA_OPS(?:_SLEEPABLE)?\((\w+)", source)
    assert callbacks and all(cb.startswith(f"{name}_") for cb in callbacks), callbacks


@pytest.mark.parametrize("name", NAMES)
def test_header_states_policy_intent_fit_and_tunables(name: str) -> None:
    source = (POLICIES_DIR / name / f"{name}.bpf.c").read_text()
    header = source.split("*/", 2)[1]  # the comment after the SPDX line
    assert source.startswith("/* SPDX-License-Identifier: GPL-2.0 */")
    for field in ("Policy:", "Intent:", "Good fit:", "Bad fit:", "Tunables:", "Status:"):
        assert field in header, (name, field)
    policy = resolve(name)
    assert policy.meta is not None
    for key in policy.meta.tunables:
        assert key in header, (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_every_policy_records_exit_info(name: str) -> None:
    source = (POLICIES_DIR / name / f"{name}.bpf.c").read_text()
    assert "sa_record_exit(ei)" in source and ".exit\t" in source
