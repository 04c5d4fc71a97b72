"""The CLI as a user runs it on the host (no sched_ext here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
HOST_HAS_SCX = Path("/sys/kernel/sched_ext").exists()


def _cli(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCHEDAGENT_STATE_DIR": str(tmp), "SCHEDAGENT_CACHE_DIR": str(tmp)}
    return subprocess.run(
        [sys.executable, "-m", "schedagent", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(HOST_HAS_SCX, reason="this host kernel has sched_ext")
def test_doctor_json_on_host_reports_no_sched_ext(tmp_path: Path) -> None:
    proc = _cli("doctor", "--json", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["checks"]["sched_ext"]["ok"] is False
    assert "CONFIG_SCHED_CLASS_EXT" in data["checks"]["sched_ext"]["fix"]
    assert data["sched_ext_ready"] is False


def test_unknown_policy_exit_code_and_json_error(tmp_path: Path) -> None:
    proc = _cli("policies", "verify", "no_such_policy", "--json", tmp=tmp_path)
    assert proc.returncode == 14
    err = json.loads(proc.stdout)["error"]
    assert err["type"] == "PolicyNotFound" and err["name"] == "no_such_policy"


def test_pid_and_cgroup_together_are_refused(tmp_path: Path) -> None:
    proc = _cli("policies", "load", "x", "--pid", "1", "--cgroup", "a", tmp=tmp_path)
    assert proc.returncode == 2 and "not both" in proc.stderr


def test_unreadable_source_is_a_clear_error(tmp_path: Path) -> None:
    proc = _cli("policies", "verify", str(tmp_path / "missing.bpf.c"), tmp=tmp_path)
    assert proc.returncode == 14 and "missing.bpf.c" in proc.stderr


@pytest.mark.skipif(HOST_HAS_SCX, reason="this host kernel has sched_ext")
def test_status_on_host_says_eevdf(tmp_path: Path) -> None:
    proc = _cli("status", "--json", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["sched_ext"]["present"] is False and data["active"] is None
