"""Issue 17: tune over the whole space on the testbed kernel (this file also holds the tune
of the mixed server that test_tune.py had, policies and knobs together). EEVDF's knobs are tried
beside the policies on the mixed server, the least intrusive intervention that is better
is the one kept, and every thread a knob touched is put back exactly: after a normal end,
and after the tune is SIGKILLed holding a knob (the next schedagent run restores it from
the store's journal)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedagent import services
from schedagent.agent import planner
from schedagent.agent.report import choose
from schedagent.agent.tune import TuneRequest
from schedagent.bench import workload
from schedagent.errors import TargetGone
from schedagent.kernel import knobs, partial, scx
from schedagent.kernel.proctree import stop_tree
from schedagent.models import LiveMetric, Target, TuneBudget, WorkloadProfile
from schedagent.store import Store
from tests.vm.conftest import report

pytestmark = pytest.mark.vm


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))


@contextlib.contextmanager
def _server(tmp_path: Path, hogs: int) -> Iterator[tuple[int, Path]]:
    """The wakelat server (4 workers, 400 req/s x 3 ms) beside ``hogs`` stress-ng CPU
    hogs; yields the server's pid and its access log."""
    binary = workload.build(workload.resolve("mixed"))
    log = tmp_path / "access.log"
    background = (
        subprocess.Popen(["stress-ng", "--cpu", str(hogs), "--timeout", "900s", "-q"])
        if hogs
        else None
    )
    server = subprocess.Popen(
        [str(binary), "-w", "4", "-n", "1000000", "-r", "400", "-b", "3000", "-l", str(log)],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(6)  # past the start-up burst; its workers exist
        yield server.pid, log
    finally:
        for proc in (server, background):
            if proc is not None:
                stop_tree(proc)


@pytest.fixture
def mixed(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The mixed workload: the server beside 2x oversubscribing CPU hogs."""
    with _server(tmp_path, 2 * (os.cpu_count() or 1)) as server:
        yield server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The server alone: the CLI's start is not slowed by hogs (minutes under emulation)."""
    with _server(tmp_path, 0) as alone:
        yield alone


def _threads(pid: int) -> dict[int, knobs.ThreadAttr]:
    out = {}
    for tid in partial.target_tids(Target(pid=pid)):
        with contextlib.suppress(TargetGone):  # it exited between the list and the read
            out[tid] = knobs.read_attr(tid)
    return out


def _same_where_alive(
    before: dict[int, knobs.ThreadAttr], after: dict[int, knobs.ThreadAttr]
) -> None:
    common = before.keys() & after.keys()
    assert len(common) >= 5, (before, after)  # the server's main thread and its 4 workers
    assert {t: after[t] for t in common} == {t: before[t] for t in common}


def test_tune_on_the_mixed_server_tries_the_knobs_first_and_puts_every_thread_back(
    mixed: tuple[int, Path], tmp_path: Path
) -> None:
    pid, log = mixed
    seq = scx.read_state().enable_seq
    before = _threads(pid)
    rep = services.tune(
        TuneRequest(
            Target(pid=pid),
            latency_log=str(log),
            budget=TuneBudget(
                observe_s=3,
                window_s=2,
                rounds=4,
                budget_s=900,
                max_evals=30,
                max_candidates=1,
                max_knobs=3,
            ),
        )
    )
    after = _threads(pid)
    d = rep.decision
    assert d is not None
    report(
        "tune_interventions_mixed",
        {
            "decision": [d.policy, d.kind, d.verdict, d.ratio, d.ci],
            "why": d.why,
            "choice": rep.choice,
            "eevdf": rep.baseline_samples,
            "trials": [
                (t.label, t.kind, t.rank, t.verdict, t.ratio, t.ci, t.samples) for t in rep.trials
            ],
            "evaluations": rep.evaluations,
            "wall_s": round(rep.wall_s),
        },
    )
    # every thread the knobs touched is exactly as it was, and sched_ext is off again
    _same_where_alive(before, after)
    snap = scx.read_state()
    assert snap.state == "disabled" and snap.enable_seq > seq, snap  # target really ran
    # the knobs were screened beside the policy, least intrusive first, each with its
    # verdict and interval
    prof = WorkloadProfile.from_json(rep.profile)
    assert prof.workload_class in ("mixed", "latency-critical", "interactive"), prof
    planned = [c.label for c in planner.knobs(prof, 3)] + [planner.rank(prof, {}, 1)[0].label]
    assert len(planned) >= 3 and planned[0] == "nice:-10", planned
    screened = rep.trials[: len(planned)]
    assert [t.label for t in screened] == planned
    assert [t.rank for t in screened] == sorted(t.rank for t in screened)
    assert [t.kind for t in screened][-1] == "policy" and screened[0].kind == "knob"
    assert all(len(t.samples) >= 4 and t.ci is not None for t in screened), rep.trials
    # the one confirmed is the one the rule picks: the least intrusive `better` that
    # reached the SLO (else the best), so a kept knob means no policy was needed
    confirmed = [t for t in rep.trials if t.confirmation is not None]
    metric = LiveMetric(**rep.metric)  # type: ignore[arg-type]  # asdict of a LiveMetric
    picked = choose(rep.trials, metric.direction, prof.slo, metric)
    assert confirmed == ([picked.trial] if picked.trial is not None else []), rep.choice
    if d.policy != "eevdf":
        assert d.verdict == "better" and d.ci is not None and d.ci[1] < 1.0, d.why
        assert picked.trial is not None and d.policy == picked.trial.policy
        assert d.kind == picked.trial.kind
    # the journal is empty and the store saw each knob applied and restored
    store = Store(tmp_path / "state" / "schedagent.db")
    try:
        assert store.knob_journal() == []
        kinds_seen = [e.kind for e in store.events(500)]
        assert kinds_seen.count("knob-applied") == kinds_seen.count("knob-restored") >= 3
    finally:
        store.close()


def test_a_tune_killed_while_it_holds_a_knob_is_undone_by_the_next_run(
    server: tuple[int, Path], tmp_path: Path
) -> None:
    pid, log = server
    before = _threads(pid)
    assert all(a.nice == 0 for a in before.values()), before
    env = os.environ | {"SCHEDAGENT_STATE_DIR": str(tmp_path / "state")}
    tune = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "schedagent",
            "tune",
            str(pid),
            "--latency-log",
            str(log),
            "--observe-s",
            "2",
            "--window-s",
            "4",
            "--max-knobs",
            "1",
            "--json",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 600  # imports, profile and compiles under emulation
        while time.monotonic() < deadline and tune.poll() is None:
            if any(a.nice == -10 for a in _threads(pid).values()):
                break
            time.sleep(0.1)
        assert tune.poll() is None, "tune ended before it applied nice:-10"
        tune.kill()  # SIGKILL: no finally block, no restore
        tune.wait()
    finally:
        stop_tree(tune)
    held = _threads(pid)
    assert sum(a.nice == -10 for a in held.values()) >= 5, held  # the kernel kept the knob
    store = Store(tmp_path / "state" / "schedagent.db")
    try:
        journaled = {e.tid for e in store.knob_journal()}
        assert journaled and journaled <= set(held) | set(before), journaled
        # any schedagent run recovers a dead holder's knobs; `rollback` is the obvious one
        out = subprocess.run(
            [sys.executable, "-m", "schedagent", "rollback", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout)["state_after"] == "disabled"
        assert store.knob_journal() == [], out.stderr[-2000:]
        restored = [e for e in store.events(200) if e.kind == "restored-knobs"]
        assert restored and restored[0].detail["threads"] == len(journaled), restored
        _same_where_alive(before, _threads(pid))
    finally:
        store.close()
    snap = scx.read_state()
    assert snap.state == "disabled", snap
    report("tune_sigkill_knob", {"journaled": len(journaled), "threads": len(held)})
