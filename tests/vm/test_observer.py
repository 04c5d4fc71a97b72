"""Issue 16: the observer on the sched_ext kernel, with a BPF scheduler attached.

The observer's counters are the kernel's own, copied at each switch; under a sched_ext
policy they must still agree with schedstat, and the starvation scan must still find a
thread kept off its CPU. Each test asserts the scheduler's sysfs state while it reads.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedagent.execution import engine
from schedagent.kernel import observer, scx, starvation
from schedagent.models import Target
from schedagent.store import Store
from tests.vm.conftest import report

SLEEPY = "import time\nwhile True: time.sleep(0.002)"


@pytest.fixture
def obs(monkeypatch: pytest.MonkeyPatch) -> Iterator[observer.Observer]:
    monkeypatch.setattr(observer, "_cost_stats", True)  # the cost is read below
    observer.reset_shared()
    got = observer.shared()
    assert got is not None, f"the observer must load in the testbed: {observer.unavailable()}"
    yield got
    observer.reset_shared()


def _schedstat(pid: int) -> tuple[int, int]:
    run, _wait, slices = Path(f"/proc/{pid}/schedstat").read_text().split()[:3]
    return int(run), int(slices)


def test_windows_agree_with_schedstat_under_a_sched_ext_policy(
    obs: observer.Observer, store: Store
) -> None:
    server = subprocess.Popen([sys.executable, "-c", SLEEPY])
    try:
        target = Target(pid=server.pid)
        req = engine.RunRequest("target", {}, target, switch_all=True, actor="test")
        with engine.session(req, store):
            snap = scx.read_state()
            assert snap.state == "enabled" and snap.ops == "target"
            assert Path("/sys/kernel/sched_ext/switch_all").read_text().strip() == "1"
            obs.watch(target, [server.pid])
            time.sleep(0.3)
            before = _schedstat(server.pid)
            window = obs.window(target, 3.0)
            after = _schedstat(server.pid)
            assert scx.read_state().state == "enabled"
        first, last = window.first[server.pid], window.last[server.pid]
        slices, kernel_slices = last.slices - first.slices, after[1] - before[1]
        run, kernel_run = last.run_ns - first.run_ns, after[0] - before[0]
        assert kernel_slices > 50
        assert abs(slices - kernel_slices) <= 0.1 * kernel_slices + 5
        assert abs(run - kernel_run) <= 0.15 * kernel_run + 5_000_000
        cost = obs.cost()
        assert cost.events > 0 and cost.run_ns > 0
        report("observer_ns_per_event_in_testbed", round(cost.ns_per_event, 1))
    finally:
        server.kill()
        server.wait()


def test_the_guard_scan_reads_the_observer_while_a_policy_runs(
    obs: observer.Observer, store: Store
) -> None:
    """The guard's scan with a scheduler attached: a quiet system has no starved
    thread, and the scan is the observer's (it reports single waits it saw)."""
    req = engine.RunRequest("vtime", {}, None, actor="test")
    with engine.session(req, store):
        assert scx.read_state().state == "enabled"
        found = starvation.scan(2.0, limit_ms=2000)
        assert found.tid is None, found
        obs.take_worst()
        time.sleep(0.5)
        assert obs.take_worst() is not None  # every switch on the system reaches it
        assert scx.read_state().state == "enabled"
