"""The observer on this host's real kernel: BTF tracepoints, maps, a task iterator.

Each test checks a figure the observer reports against what the kernel itself says
(schedstat) or against a situation built to produce it (a thread kept off its CPU by
a SCHED_FIFO hog), so a wrong field offset, a missed event or a lost child fails it.
Skipped where the observer cannot load (not root, no BTF); `make test` runs as root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedagent.kernel import observer, partial, starvation
from schedagent.models import Target

SPIN = "while True: pass"
SLEEPY = "import time\nwhile True: time.sleep(0.002)"


@pytest.fixture
def obs(monkeypatch: pytest.MonkeyPatch) -> Iterator[observer.Observer]:
    monkeypatch.delenv(observer.OFF_ENV, raising=False)
    monkeypatch.setattr(observer, "_cost_stats", True)  # the cost test reads BPF stats
    observer.reset_shared()
    got = observer.shared()
    if got is None:
        pytest.skip(f"the observer cannot load here: {observer.unavailable()}")
    yield got
    observer.reset_shared()


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _py(procs: list[subprocess.Popen[bytes]], code: str, *prefix: str) -> int:
    procs.append(subprocess.Popen([*prefix, sys.executable, "-c", code]))
    return procs[-1].pid


def _schedstat(pid: int) -> tuple[int, int, int]:
    run, wait, slices = Path(f"/proc/{pid}/schedstat").read_text().split()[:3]
    return int(run), int(wait), int(slices)


def test_a_window_counts_what_schedstat_counts(obs: observer.Observer, spawn: list) -> None:
    pid = _py(spawn, SLEEPY)
    time.sleep(0.3)
    obs.watch(Target(pid=pid), [pid])
    time.sleep(0.2)  # every thread has had an event: the window starts mid-life
    before = _schedstat(pid)
    window = obs.window(Target(pid=pid), 1.5)
    after = _schedstat(pid)
    first, last = window.first[pid], window.last[pid]
    run = last.run_ns - first.run_ns
    slices = last.slices - first.slices
    kernel_run, kernel_slices = after[0] - before[0], after[2] - before[2]
    assert kernel_slices > 100  # it slept 2 ms at a time
    assert abs(slices - kernel_slices) <= 0.1 * kernel_slices + 5
    assert abs(run - kernel_run) <= 0.15 * kernel_run + 2_000_000
    assert last.voluntary - first.voluntary >= 0.8 * kernel_slices
    assert window.tgids_seen == {pid} and not window.tgids_exited and not window.target_exited


def test_a_spinning_thread_is_counted_while_it_runs(obs: observer.Observer, spawn: list) -> None:
    """A thread that never leaves its CPU has no switch to count at: the reader adds
    the timeslice in progress, as schedstat does."""
    pid = _py(spawn, SPIN)
    time.sleep(0.3)
    before = _schedstat(pid)
    window = obs.window(Target(pid=pid), 1.0)
    kernel_run = _schedstat(pid)[0] - before[0]
    run = window.last[pid].run_ns - window.first[pid].run_ns
    assert kernel_run > 0.3e9
    assert abs(run - kernel_run) <= 0.15 * kernel_run


def test_children_leave_the_watched_set_when_they_exit(obs: observer.Observer, spawn: list) -> None:
    """A child joins at fork, unknown to user space; its entry in the watched set must
    go when it ends, or a forking server would fill the map."""
    import ctypes

    code = (
        "import subprocess, sys, time\n"
        "for _ in range(5):\n"
        "    subprocess.run([sys.executable, '-c', 'pass'])\n"
        "time.sleep(60)\n"
    )
    pid = _py(spawn, code)
    obs.watch("forker", [pid])
    time.sleep(3.0)
    children = {t.tgid for t in obs.threads().values()} - {pid}
    assert len(children) >= 5
    value = ctypes.c_uint32()
    for child in children:
        ret = obs._lib.bpf_map_lookup_elem(
            obs._fd["groups"], ctypes.byref(ctypes.c_uint32(child)), ctypes.byref(value)
        )
        assert ret != 0, f"the exited child {child} is still in the watched set"


def test_children_started_inside_the_window_join_and_their_exits_count(
    obs: observer.Observer, spawn: list
) -> None:
    code = (
        "import subprocess, sys, time\n"
        "time.sleep(0.5)\n"
        "for _ in range(4):\n"
        "    subprocess.run([sys.executable, '-c', 'sum(range(3 * 10**6))'])\n"
        "time.sleep(60)\n"
    )
    pid = _py(spawn, code)
    window = obs.window(Target(pid=pid), 4.0)
    children = window.tgids_seen - {pid}
    assert len(children) >= 4, window.tgids_seen
    assert children <= window.tgids_exited
    assert pid not in window.tgids_exited
    child_run = sum(t.run_ns for t in window.last.values() if t.tgid in children)
    assert child_run > 4 * 20_000_000  # each child summed 3 million numbers


def test_children_forked_between_discovery_and_the_watch_are_watched(
    obs: observer.Observer, spawn: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job set forks its jobs at once: they can all be forked after the window's
    discovery listed the parent and before the watch let the fork hook see them. The
    CI run that met this watched 2 of 401 processes and called the job set CPU-bound."""
    code = (
        "import subprocess, sys, time\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
        " for _ in range(3)]\n"
        "time.sleep(60)\n"
    )
    pid = _py(spawn, code)
    deadline = time.monotonic() + 30
    real = partial.target_threads
    while len({tgid for tgid, _ in real(Target(pid=pid))}) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    kids = {tgid for tgid, _ in real(Target(pid=pid))} - {pid}
    assert len(kids) == 3
    calls = []

    def stale_first(target: Target) -> list[tuple[int, int]]:
        # the first discovery saw the parent alone, as if it ran before the forks
        calls.append(target)
        pairs = real(target)
        return [(tgid, tid) for tgid, tid in pairs if tgid == pid] if len(calls) == 1 else pairs

    monkeypatch.setattr(partial, "target_threads", stale_first)
    window = obs.window(Target(pid=pid), 0.5)
    assert kids <= window.tgids_seen, (kids, window.tgids_seen)
    assert kids <= window.tgids_last


def test_the_wait_histogram_counts_every_wakeup(obs: observer.Observer, spawn: list) -> None:
    pid = _py(spawn, SLEEPY)
    time.sleep(0.2)
    group = obs.watch(Target(pid=pid), [pid])
    start = obs.wait_hist(group)
    window = obs.window(Target(pid=pid), 1.0)
    woken = obs.wait_hist(group).minus(start)
    wakeups = window.last[pid].voluntary - window.first[pid].voluntary
    assert wakeups > 100
    assert abs(woken.total - wakeups) <= 0.1 * wakeups + 5
    assert 0 < woken.percentile(99) < 1_000_000  # µs: under a second


def test_a_target_that_exits_mid_window_ends_it(obs: observer.Observer, spawn: list) -> None:
    pid = _py(spawn, "import time; time.sleep(0.6)")
    started = time.monotonic()
    window = obs.window(Target(pid=pid), 5.0)
    assert window.target_exited
    assert time.monotonic() - started < 4.0


def test_a_thread_kept_off_its_cpu_is_found_with_its_wait(
    obs: observer.Observer, spawn: list
) -> None:
    """A SCHED_FIFO hog and a normal thread pinned to one CPU: the normal one waits
    until the RT throttle or the fair server lets it run (tens to hundreds of ms)."""
    if Path("/proc/sys/kernel/sched_rt_runtime_us").read_text().strip() == "-1":
        pytest.skip("the RT throttle is off: the pinned thread would never run")
    cpu = (os.cpu_count() or 1) - 1
    victim = _py(spawn, SPIN, "taskset", "-c", str(cpu))
    time.sleep(0.2)
    _py(spawn, SPIN, "taskset", "-c", str(cpu), "chrt", "-f", "1")
    longest = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        for wait in obs.waiting_now():
            if wait.tid == victim:
                longest = max(longest, wait.wait_ns)
    assert longest > 20_000_000  # ns: kept off its CPU for more than 20 ms at a time
    found = starvation.scan_observer(obs, 2.0, limit_ms=20)
    assert found.tid is not None and found.wait_ms > 20, found
    # the victim, or a kernel thread bound to the same CPU (it waits behind the hog too)
    assert found.tid == victim or os.sched_getaffinity(found.tid) == {cpu}, found


def test_a_quiet_system_has_no_starved_thread(obs: observer.Observer) -> None:
    found = starvation.scan_observer(obs, 1.0, limit_ms=1000)
    assert found.tid is None and found.wait_ms == 0.0


def test_the_observer_reports_its_own_cost(obs: observer.Observer, spawn: list) -> None:
    _py(spawn, SLEEPY)
    time.sleep(0.5)
    cost = obs.cost()
    assert cost.programs == 8
    assert cost.events > 100
    assert cost.run_ns > 0
    assert 0 < cost.cpu_pct < 100


def test_the_257th_group_takes_the_place_of_the_longest_unused(obs: observer.Observer) -> None:
    first = obs.watch("first", [os.getpid()])
    for i in range(observer.MAX_GROUPS - 1):
        obs.watch(("other", i), [])
    assert obs.groups_watched() == observer.MAX_GROUPS
    again = obs.watch("newest", [])
    assert again == first
    assert obs.groups_watched() == observer.MAX_GROUPS
    assert obs.wait_hist(again).total == 0


def test_switched_off_it_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(observer.OFF_ENV, "off")
    assert observer.shared() is None
    assert "switched off" in str(observer.unavailable())


def test_a_forgotten_target_stops_counting_at_once(obs: observer.Observer, spawn: list) -> None:
    """Each task caches whether it is watched; forgetting a target must reach that cache
    (a generation bump), or its threads would go on counting."""
    pid = _py(spawn, SLEEPY)
    time.sleep(0.2)
    group = obs.watch("sleepy", [pid])
    time.sleep(0.5)
    counting = obs.threads(group)[pid].voluntary
    assert counting > 50
    obs.forget("sleepy")
    assert pid not in obs.threads()  # its entries go with it
    time.sleep(0.5)
    assert pid not in obs.threads()  # and nothing counts it again
    # watched again, it counts again
    group = obs.watch("sleepy", [pid])
    before = obs.threads(group)[pid].voluntary
    time.sleep(0.5)
    assert obs.threads(group)[pid].voluntary - before > 50


def test_a_group_a_window_reads_is_never_taken_for_another_target(
    obs: observer.Observer, spawn: list
) -> None:
    """A window in progress pins its group: 256 new targets meanwhile take every other
    group, never that one, and the 257th is refused with a clear error."""
    import threading

    pid = _py(spawn, SLEEPY)
    target = Target(pid=pid)
    done: list[object] = []
    reader = threading.Thread(target=lambda: done.append(obs.window(target, 2.0)))
    reader.start()
    time.sleep(0.5)  # the window has begun
    mine = obs._groups[target]
    for i in range(observer.MAX_GROUPS - 1):
        obs.watch(("other", i), [])
    assert obs._groups[target] == mine  # still there: it was the oldest, but pinned
    for i in range(observer.MAX_GROUPS - 1):
        obs._pinned[obs._groups[("other", i)]] = 1  # as if each had a window too
    with pytest.raises(observer.ObserverBusy, match="try again"):
        obs.watch("one too many", [])
    reader.join()
    assert done and pid in done[0].last  # the window read its own group to the end
    assert obs.watch("one too many", []) == mine  # its window over, the group is free


def test_a_zombie_target_ends_its_window_at_once(obs: observer.Observer, spawn: list) -> None:
    """A pid that exited but is not reaped yet is reported as exited, not as missing:
    the same answer procfs polling gives."""
    pid = _py(spawn, "pass")
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    window = observer.observe(Target(pid=pid), 5.0)
    assert window.target_exited and window.duration_s < 2.0
