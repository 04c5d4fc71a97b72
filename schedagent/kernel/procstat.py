"""Cheap, always-on observation of a target from procfs (read-only).

A target is a pid with all its threads and children, or a cgroup. A window
takes a snapshot at its start and end and samples in between, so threads and
child processes that come and go during the window are still counted.
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from schedagent.errors import TargetGone
from schedagent.kernel import partial
from schedagent.models import SystemSample, Target, ThreadSample, Topology, Window


def read_thread(tgid: int, tid: int) -> ThreadSample | None:
    """Counters of one thread, or None if it is gone."""
    base = Path(f"/proc/{tgid}/task/{tid}")
    try:
        run, wait, slices = (int(x) for x in (base / "schedstat").read_text().split()[:3])
        vol = invol = 0
        for line in (base / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol = int(line.split()[1])
    except (OSError, ValueError):
        return None
    return ThreadSample(tid, tgid, run, wait, slices, vol, invol, time.monotonic())


def read_thread_state(tgid: int, tid: int) -> tuple[str, int] | None:
    """One thread's state letter and its CPU time so far (ns, from schedstat); None if it
    is gone."""
    try:
        run_ns = int(Path(f"/proc/{tgid}/task/{tid}/schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    fields = stat_fields(f"/proc/{tgid}/task/{tid}/stat")
    return (fields[0], run_ns) if fields else None


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_TICK_NS = 1_000_000_000 // _TICKS_PER_S


def stat_fields(path: str) -> list[str] | None:
    """The fields of a /proc stat file after the command name (index 0 is field 3,
    the state letter; field N of proc(5) is index N - 3); None if it is gone."""
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def read_process(tgid: int) -> tuple[str, int] | None:
    """The process's state letter and the CPU time of its children that exited and were
    reaped (cutime + cstime, ns), from /proc/PID/stat; None if it is gone."""
    fields = stat_fields(f"/proc/{tgid}/stat")
    try:
        return (fields[0], (int(fields[13]) + int(fields[14])) * _TICK_NS) if fields else None
    except (ValueError, IndexError):
        return None


def read_io_bytes(tgid: int) -> int | None:
    """rchar + wchar of a process (all its threads) from /proc/PID/io: the bytes it read
    and wrote through syscalls; None if it is gone or the file is unreadable."""
    try:
        fields = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{tgid}/io").read_text().splitlines()
            if ":" in line
        )
        return int(fields["rchar"]) + int(fields["wchar"])
    except (OSError, KeyError, ValueError):
        return None


def _psi(kind: str) -> int | None:
    try:
        line = Path(f"/proc/pressure/{kind}").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    total = line.rsplit("total=", 1)[-1]
    return int(total) if total.isdigit() else None


def read_system() -> SystemSample:
    """Load, runnable count and PSI totals."""
    running = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("procs_running"):
                running = int(line.split()[1])
    except OSError:
        pass
    return SystemSample(os.getloadavg()[0], running, _psi("cpu"), _psi("memory"), _psi("io"))


def read_topology(root: Path = Path("/sys/devices/system/cpu")) -> Topology:
    """CPU count, SMT, number of LLC domains and NUMA nodes."""
    from schedagent.kernel.topology import llc_ids

    cpus = os.cpu_count() or 1
    smt = False
    try:
        smt = (
            "," in (root / "cpu0/topology/thread_siblings_list").read_text()
            or "-" in (root / "cpu0/topology/thread_siblings_list").read_text()
        )
    except OSError:
        pass
    nodes = len(list(Path("/sys/devices/system/node").glob("node[0-9]*"))) or 1
    return Topology(cpus, smt, len(set(llc_ids(root).values())) or 1, nodes)


@contextlib.contextmanager
def priority() -> Iterator[str]:
    """``raise_priority`` for a ``with`` block; the thread's old policy comes back after."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        yield raise_priority()
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, param)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)


def raise_priority() -> str:
    """Keep this (observing) thread on time, whatever scheduler is being tried.

    A candidate that serves the target first can leave almost nothing for other
    tasks, and a sampler that gets no CPU stretches its windows and, worse, delays
    the guard. SCHED_FIFO at the lowest RT priority puts the calling thread above
    every sched_ext and fair task (RT throttling still caps it at 95% of a CPU), and
    SCHED_RESET_ON_FORK keeps the workloads it starts on the normal policy (threads
    are reset too, so a thread that needs it, like the guard, calls this itself).
    Without root it falls back to nice -10, then to nothing. Returns what it did.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
        return "SCHED_FIFO 1"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, min(os.getpriority(os.PRIO_PROCESS, 0), -10))
        return "nice -10"
    except OSError:
        return "unchanged"


def observe(target: Target, duration_s: float, sample_s: float = 0.1) -> Window:
    """Watch the target for ``duration_s``; raise TargetGone if it is gone at the start.

    The watching thread runs at raised priority (see ``raise_priority``): a target of
    400 CPU-bound jobs otherwise leaves it a 1/400 share, its passes come seconds
    apart, and the jobs that start and finish between them are never seen.
    """
    if target.pid is not None and not psutil.pid_exists(target.pid):
        raise TargetGone(target.pid)
    with priority():
        return _observe(target, duration_s, sample_s)


def _observe(target: Target, duration_s: float, sample_s: float) -> Window:
    window = Window(duration_s, system_start=read_system())
    boot_start = time.clock_gettime(time.CLOCK_BOOTTIME)
    started = time.monotonic()
    deadline = started + duration_s
    passes = 0
    old_zombies: set[int] = set()  # zombies already there at the first pass
    while True:
        passes += 1
        pass_started = time.monotonic()
        try:
            pairs = partial.target_threads(target)
        except TargetGone:
            # the target exited mid-window: keep what was recorded, say so
            window.target_exited = True
            window.duration_s = max(time.monotonic() - started, 1e-3)
            break
        current_tgids = {tgid for tgid, _ in pairs}
        # A job that finished is a zombie until its parent reaps it, and a parent busy
        # forking more jobs (or starved of CPU by them) may not reap for seconds: a
        # zombie has exited. (A leader that left its other threads running also shows
        # Z; that process is still alive.) Zombies already there at the start are old.
        threads = collections.Counter(tgid for tgid, _ in pairs)
        zombies = set()
        for tgid in current_tgids:
            proc = read_process(tgid)
            if proc is None:
                continue
            state, reaped = proc
            if state == "Z" and threads[tgid] == 1:
                zombies.add(tgid)
            window.reaped_first.setdefault(tgid, reaped)
            window.reaped_last[tgid] = reaped
        if passes == 1:
            old_zombies = set(zombies)
        zombies -= old_zombies
        current_tgids -= old_zombies
        window.tgids_exited |= (window.tgids_seen - current_tgids) | zombies
        window.tgids_seen |= current_tgids
        window.tgids_last = set(current_tgids)
        alive = current_tgids - zombies
        window.max_threads = max(window.max_threads, sum(1 for tgid, _ in pairs if tgid in alive))
        for tgid, tid in pairs:
            if tgid not in current_tgids:
                continue  # an old zombie
            sample = read_thread(tgid, tid)  # a new zombie's counters are its final ones
            if sample is None:
                continue
            if tid not in window.first:
                window.first[tid] = _baseline(sample, passes, boot_start)
            window.last[tid] = sample
            window.tids_seen.add(tid)
        # at least two passes: on a loaded machine one pass over many threads can take
        # longer than the whole window, and a single pass measures nothing
        if time.monotonic() >= deadline and passes >= 2:
            # rates use the real elapsed time: on a loaded host sampling can overshoot
            window.duration_s = time.monotonic() - started
            break
        # a pass over hundreds of processes is slow under load: rest at least as long as
        # it took, so watching never takes more than half a CPU from what it watches
        took = time.monotonic() - pass_started
        time.sleep(min(max(sample_s, took), max(0.0, deadline - time.monotonic())))
    window.system_end = read_system()
    return window


def _baseline(sample: ThreadSample, passes: int, boot_start: float) -> ThreadSample:
    """Where a thread's counting starts: at its first sighting, or at zero for a thread
    born inside the window (a job that started between two passes ran all of its time
    inside the window; counting from its first sighting would lose that)."""
    if passes == 1:
        return sample
    fields = stat_fields(f"/proc/{sample.tgid}/task/{sample.tid}/stat")
    if fields is None:
        return sample
    try:
        born = int(fields[19]) / _TICKS_PER_S  # s since boot
    except (ValueError, IndexError):
        return sample
    if born <= boot_start:
        return sample
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - born
    return ThreadSample(sample.tid, sample.tgid, 0, 0, 0, 0, 0, time.monotonic() - age)
