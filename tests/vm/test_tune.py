"""Issue 7: ``tune`` end to end on real workloads, with the offline planner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schedagent import services
from schedagent.agent.tune import TuneRequest
from schedagent.bench import workload
from schedagent.kernel import scx
from schedagent.models import Target, TuneBudget
from schedagent.store import Store
from tests.vm.conftest import report, stop_tree


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
        rep = services.tune(
            TuneRequest(
                Target(pid=hog.pid),
                budget=TuneBudget(
                    observe_s=3,
                    window_s=2,
                    rounds=4,
                    budget_s=600,
                    max_evals=8,
                    max_candidates=2,
                    max_knobs=0,  # policies only: knobs have their own test (issue 17)
                ),
            )
        )
    finally:
        stop_tree(hog)
    assert _check_restored(seq) > 0  # candidates really ran on sched_ext
    d = rep.decision
    assert d is not None
    report(
        "tune_throughput",
        {
            "class": rep.profile["class"],
            "decision": d.policy,
            "trials": [(t.label, t.verdict, t.ratio) for t in rep.trials],
            "evaluations": rep.evaluations,
            "wall_s": round(rep.wall_s),
        },
    )
    assert rep.profile["class"] == "throughput"
    # issue 13: what is kept was confirmed better on fresh windows, in the metric's own
    # direction (cpus_used: higher is better), and nothing screened "worse" is kept
    assert rep.metric["direction"] == "higher"
    worse = {
        (t.policy, tuple(sorted(t.overrides.items()))) for t in rep.trials if t.verdict == "worse"
    }
    assert (d.policy, tuple(sorted(d.tunables.items()))) not in worse, d.why
    if d.policy != "eevdf":
        assert d.verdict == "better" and d.ratio is not None and d.ci is not None
        assert d.ratio > 1 and d.ci[0] > 1, d.why
        kept = next(t for t in rep.trials if t.confirmation is not None)
        assert kept.confirmation is not None and kept.confirmation.verdict == "better"
        assert len(kept.confirmation.samples) >= 4


def test_tune_on_the_mixed_server_ends_better_on_the_clients_p99(tmp_path: Path) -> None:
    """The bench issue's mixed workload: a server that needs ~1.2 CPUs beside 2x hogs.
    Fair sharing starves it; serving it first must be measured `better` on the p99 of the
    latencies the client itself logs, and kept."""
    seq = scx.read_state().enable_seq
    binary = workload.build(workload.resolve("mixed"))
    log = tmp_path / "access.log"
    hogs = subprocess.Popen(
        ["stress-ng", "--cpu", str(2 * (os.cpu_count() or 1)), "--timeout", "900s", "-q"]
    )
    client = subprocess.Popen(
        [str(binary), "-w", "4", "-n", "1000000", "-r", "400", "-b", "3000", "-l", str(log)],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(6)  # past the client's start-up burst
        rep = services.tune(
            TuneRequest(
                Target(pid=client.pid),
                latency_log=str(log),
                budget=TuneBudget(
                    observe_s=3,
                    window_s=2,
                    rounds=4,
                    budget_s=600,
                    max_evals=10,
                    max_candidates=1,
                    max_knobs=0,  # test_interventions tunes this case with the knobs
                ),
            )
        )
    finally:
        for proc in (client, hogs):
            stop_tree(proc)
    assert _check_restored(seq) > 0
    d = rep.decision
    assert d is not None
    report(
        "tune_mixed",
        {
            "class": rep.profile["class"],
            "metric": rep.metric["name"],
            "decision": d.policy,
            "why": d.why,
            "eevdf": rep.baseline_samples,
            "skipped": rep.skipped_windows,
            "trials": [(t.label, t.verdict, t.ratio, t.samples) for t in rep.trials],
            "evaluations": rep.evaluations,
            "wall_s": round(rep.wall_s),
        },
    )
    assert rep.metric["name"] == "p99_request_us"
    assert rep.ended in ("complete", "budget"), rep.end_note
    # target was measured in screening, on enough windows to decide
    assert any(t.label == "target" and len(t.samples) >= 4 for t in rep.trials), d.why
    # Kept exactly when its own fresh confirmation says better (issue 13). Under emulation
    # this test's effect was 0.6-1.0x in three CI dry runs, which 4 confirmation pairs
    # separate only sometimes (the demo's tune saw 0.3x and kept target, confirmed).
    confirmed = [t for t in rep.trials if t.confirmation is not None]
    assert len(confirmed) <= 1
    if d.policy != "eevdf":
        (leader,) = confirmed
        assert leader.confirmation is not None and leader.confirmation.verdict == "better"
        assert d.policy == "target" and d.verdict == "better", d.why
        assert d.ratio is not None and d.ci is not None and d.ci[1] < 1.0  # a lower client p99
        assert len(leader.confirmation.samples) >= 4
    else:
        assert all(
            t.confirmation is not None and t.confirmation.verdict != "better" for t in confirmed
        ), d.why


def test_tune_of_a_pid_that_exits_mid_run_restores_eevdf_and_keeps_the_record(
    tmp_path: Path,
) -> None:
    # it outlives the start (imports, the observer attach: seconds under emulation) and
    # the first profile, and exits long before 20 rounds of windows are done
    proc = subprocess.Popen(["stress-ng", "--cpu", "1", "--timeout", "60s", "-q"])
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "schedagent",
            "tune",
            str(proc.pid),
            "--json",
            "--observe-s",
            "2",
            "--window-s",
            "2",
            "--rounds",
            "20",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"SCHEDAGENT_STATE_DIR": str(tmp_path / "state")},
    )
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
