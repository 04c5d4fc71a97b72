"""Issue 7: ``tune`` end to end on real workloads, with the offline planner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from schedagent import services
from schedagent.agent.tune import TuneRequest
from schedagent.kernel import partial, scx
from schedagent.store import Store
from tests.vm.conftest import report


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))


def _check_restored(seq_before: int) -> int:
    snap = scx.read_state()
    assert snap.state == "disabled", snap
    return snap.enable_seq - seq_before


def test_tune_throughput_never_keeps_a_worse_policy() -> None:
    seq = scx.read_state().enable_seq
    hog = subprocess.Popen(["stress-ng", "--cpu", "2", "--timeout", "900s", "-q"])
    try:
        rep = services.tune(TuneRequest(partial.Target(pid=hog.pid), observe_s=3, window_s=2,
                                        rounds=4, budget_s=600, max_evals=8,
                                        max_candidates=2))
    finally:
        hog.kill()
        hog.wait()
    assert _check_restored(seq) > 0  # candidates really ran on sched_ext
    d = rep.decision
    assert d is not None
    report("tune_throughput", {"class": rep.profile["class"], "decision": d.policy,
                               "trials": [(t.label, t.verdict, t.ratio) for t in rep.trials],
                               "evaluations": rep.evaluations, "wall_s": round(rep.wall_s)})
    assert rep.profile["class"] == "throughput"
    assert d.verdict != "worse"
    assert d.policy == "eevdf" or d.verdict == "better"


def test_tune_of_a_pid_that_exits_mid_run_restores_eevdf_and_keeps_the_record(
        tmp_path: Path) -> None:
    proc = subprocess.Popen(["stress-ng", "--cpu", "1", "--timeout", "12s", "-q"])
    out = subprocess.run([sys.executable, "-m", "schedagent", "tune", str(proc.pid), "--json",
                          "--observe-s", "2", "--window-s", "2", "--rounds", "20"],
                         capture_output=True, text=True, check=False,
                         env=os.environ | {"SCHEDAGENT_STATE_DIR": str(tmp_path / "state")})
    proc.wait()
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["ended"] == "target-exited" and data["decision"]["policy"] == "eevdf"
    assert scx.read_state().state == "disabled"
    store = Store(tmp_path / "state" / "schedagent.db")
    try:
        events = [e for e in store.events(100) if e.kind == "tune"]
        assert events and events[-1].detail["ended"] == "target-exited"
        assert store.active() is None and store.switched() == []
    finally:
        store.close()
