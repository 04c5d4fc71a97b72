"""Issue 4: every built-in policy passes the gates, attaches, survives load, and detaches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedagent import services
from schedagent.execution import engine
from schedagent.kernel import scx
from schedagent.models import Target
from schedagent.policy.repo import builtin_names, resolve
from schedagent.store import Store
from tests.vm.conftest import report, stop_tree

NAMES = builtin_names()


@pytest.mark.parametrize("name", NAMES)
def test_policy_passes_the_verifier_at_default_min_and_max(name: str, store: Store) -> None:
    meta = resolve(name).meta
    assert meta is not None
    for bound in ("default", "min", "max"):
        overrides = {k: getattr(t, bound) for k, t in meta.tunables.items()}
        result = engine.verify(name, overrides, store)
        assert result.gates == ["static gate", "clang", "object check", "kernel verifier"]
        assert result.ops_name == name and result.tunables == overrides
        assert sorted(result.rodata) == sorted(meta.tunables)
    assert scx.read_state().state == "disabled"


@pytest.fixture
def mixed_load() -> Iterator[None]:
    """stress-ng CPU hogs plus perf bench sched messaging in a loop."""
    hogs = subprocess.Popen(["stress-ng", "--cpu", "2", "--timeout", "120s", "-q"])
    messaging = subprocess.Popen(
        ["sh", "-c", "while :; do perf bench sched messaging -g 2 -l 20 >/dev/null 2>&1; done"]
    )
    yield
    for proc in (messaging, hogs):  # the loop first, so it starts no new perf
        stop_tree(proc)


@pytest.mark.parametrize("name", NAMES)
def test_policy_runs_cpu_and_messaging_load_for_10s(
    name: str, store: Store, mixed_load: None
) -> None:
    seen: list[scx.ScxState] = []

    def run() -> engine.RunOutcome:
        seen.clear()
        return engine.run_policy(
            engine.RunRequest(name, {}, duration_s=10.0),
            store,
            lambda _o: seen.append(scx.read_state()),
        )

    outcome = run()
    why = outcome.guard_event.reason() if outcome.guard_event else ""
    if outcome.reason == "ejected" and "soft lockup" in why:
        # The kernel's watchdog saw a vCPU make no progress for 3/4 of its 20 s
        # threshold, which emulation produces when the host stalls the vCPU's thread
        # (seen once in 16 CI runs, under vtime). Once more: a policy that really
        # locks a CPU up does it again.
        report(f"policy_load_soft_lockup_rerun_{name}", why)
        outcome = run()
    assert seen[0].is_enabled and seen[0].ops == name and seen[0].switch_all
    assert outcome.reason == "duration", outcome.guard_event and outcome.guard_event.reason()
    assert outcome.guard_event is None and outcome.ran_s >= 10.0
    assert sum(outcome.stats) > 0, "the policy's counters never moved"
    assert outcome.final_state == "disabled"
    assert not Path("/sys/kernel/sched_ext/root/ops").exists()
    assert store.events()[-1].detail["reason"] == "duration"


SLEEPER = """
import os, sys, time
os.sched_setaffinity(0, {0})
def run_delay():
    return int(open('/proc/self/schedstat').read().split()[1])
prev, worst = run_delay(), 0
print('ready', flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    time.sleep(0.01)
    cur = run_delay()
    worst, prev = max(worst, cur - prev), cur
print(worst, flush=True)
"""


def test_target_policy_bounds_how_long_others_wait(store: Store) -> None:
    """A pinned target hog and a pinned sleeper: the sleeper's longest runnable wait,
    read from its own schedstat run_delay, stays below max_other_wait_ns plus one
    target slice and scheduling-tick slack."""
    meta = resolve("target").meta
    assert meta is not None
    max_wait_ns, slice_ns = 20_000_000, meta.tunables["target_slice_ns"].default
    hog = subprocess.Popen(["stress-ng", "--cpu", "1", "--taskset", "0", "--timeout", "120s", "-q"])
    sleeper = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, "8"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sleeper.stdout is not None and sleeper.stdout.readline().strip() == "ready"
        req = engine.RunRequest(
            "target",
            {"max_other_wait_ns": max_wait_ns},
            Target(pid=hog.pid),
            duration_s=10.0,
            switch_all=True,
        )
        outcome = engine.run_policy(req, store)
        worst_ns = int(sleeper.stdout.readline())
    finally:
        stop_tree(hog)
        sleeper.kill()
        sleeper.wait()
        if sleeper.stdout is not None:
            sleeper.stdout.close()
    assert outcome.reason == "duration" and outcome.stats[0] > 0  # targets were served
    # + ticks and emulation slack, + the emulator's vCPU turns: single-threaded TCG runs the
    # two vCPUs in turn, up to 100 ms each, and on a loaded host its one thread also waits
    # for a host CPU, so a runnable task can lose a few turns (96 and 148 ms seen; 0 under
    # KVM). Without the bound the sleeper would wait the whole 10 s run.
    quantum_ns = int(os.environ.get("SCHEDAGENT_VCPU_QUANTUM_MS", "0")) * 1_000_000
    bound_ns = max_wait_ns + slice_ns + 20_000_000 + 3 * quantum_ns
    report("target_sleeper_worst_wait_ms", worst_ns / 1e6)
    assert 0 < worst_ns < bound_ns, f"sleeper waited {worst_ns / 1e6:.1f} ms"


def test_policies_show_reports_live_counters_of_the_active_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path))
    loader = subprocess.Popen(
        [sys.executable, "-m", "schedagent", "policies", "load", "fifo", "--duration", "120"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert loader.stderr is not None and "enabled" in loader.stderr.readline()
        deadline = time.monotonic() + 30
        detail = services.show_policy("fifo")
        while not sum(detail.live_stats.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
            detail = services.show_policy("fifo")
        assert detail.active and detail.live_stats["enqueued"] > 0, detail
        assert not services.show_policy("vtime").active
    finally:
        loader.send_signal(signal.SIGTERM)
        loader.wait()
        if loader.stderr is not None:
            loader.stderr.close()
    assert loader.returncode == 0
    assert scx.read_state().state == "disabled"
