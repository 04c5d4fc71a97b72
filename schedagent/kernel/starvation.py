"""Starvation on the whole system: which thread waited longest to run (read-only).

The daemon's guard runs :func:`scan` every few checks while a policy is attached: a
scheduler that serves its target first may leave some other thread runnable for seconds,
and only the system-wide view shows that.

With the observer (``kernel/observer.py``) a scan reads maps: the longest runnable wait
that ended during the window (any task, any CPU) and, a few times in the window, the
tasks still waiting (a task iterator). The figure is one wait, from becoming runnable to
getting a CPU. Without the observer, it reads every thread's ``schedstat`` twice, a
window apart, and the figure is the mean wait per timeslice over the window.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import NamedTuple

from schedagent.kernel import observer, procstat

PROC_ROOT = Path("/proc")

#: A nicer thread may wait this much longer per nice level (its fair share is ~1.25x smaller)
_NICE_STEP = 1.25
#: ... but never more than this many times the plain limit
_MAX_ALLOWANCE = 4.0
#: the observer's scan looks for tasks still waiting this often within a window
_POLL_S = 0.5


class Starvation(NamedTuple):
    """The worst thread of a scan. A tuple, so callers (and fakes) may unpack it."""

    #: its mean runnable wait per timeslice over the window (ms); 0.0 when none was over
    wait_ms: float
    #: its thread id, None when no thread waited longer than the plain limit
    tid: int | None
    #: the wait its niceness allows (ms); starved when ``wait_ms > allowed_ms``
    allowed_ms: float


def scan(window_s: float, limit_ms: float) -> Starvation:
    """The thread that waited longest over a window for its niceness (observer maps,
    else procfs); blocks for ``window_s``. See :func:`scan_observer` and
    :func:`scan_procfs`."""
    obs = observer.shared()
    if obs is None:
        return scan_procfs(window_s, limit_ms)
    return scan_observer(obs, window_s, limit_ms)


def scan_observer(obs: observer.Observer, window_s: float, limit_ms: float) -> Starvation:
    """The longest single runnable wait in a window, from the observer's maps.

    Waits that ended in the window and waits still going on at any of the polls count
    alike; the one furthest over what its niceness allows is returned.
    """
    obs.take_worst()  # what ended before the window is not this window's
    deadline = time.monotonic() + window_s
    waits: list[observer.LongWait] = []
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, _POLL_S))
        waits.extend(obs.waiting_now())
    ended = obs.take_worst()
    if ended is not None:
        waits.append(ended)
    worst = Starvation(0.0, None, limit_ms)
    for wait in waits:
        wait_ms = wait.wait_ns / 1e6
        if wait_ms <= limit_ms:
            continue
        allowed = allowed_wait_ms(limit_ms, _nice(wait.tid))
        if wait_ms / allowed > worst.wait_ms / worst.allowed_ms:
            worst = Starvation(wait_ms, wait.tid, allowed)
    return worst


def scan_procfs(window_s: float, limit_ms: float) -> Starvation:
    """The thread that waited longest per timeslice over a window, for its niceness.

    Returns its mean runnable wait per timeslice (ms), its tid, and the wait it is
    allowed: ``limit_ms`` for nice 0 and higher priorities, more for a nicer thread, whose
    fair share is smaller under any fair scheduler (EEVDF gives a nice-19 thread 1/68 of
    a nice-0 one), capped at 4x. A thread that stayed runnable without running at all
    counts its whole wait. Blocks for ``window_s``.
    """
    first = _snapshot()
    time.sleep(window_s)
    worst = Starvation(0.0, None, limit_ms)
    for tid, (wait, slices) in _snapshot().items():
        if tid not in first:
            continue
        d_wait, d_slices = wait - first[tid][0], slices - first[tid][1]
        mean_ms = d_wait / max(d_slices, 1) / 1e6
        if mean_ms <= limit_ms:
            continue  # only the few over the plain limit have their niceness read
        allowed = allowed_wait_ms(limit_ms, _nice(tid))
        if mean_ms / allowed > worst.wait_ms / worst.allowed_ms:
            worst = Starvation(mean_ms, tid, allowed)
    return worst


def allowed_wait_ms(limit_ms: float, nice: int) -> float:
    """The wait per timeslice a thread of this niceness may see before it counts as
    starved: each nice level is about 1.25x less CPU share; at most 4x the limit."""
    return limit_ms * min(_MAX_ALLOWANCE, max(1.0, _NICE_STEP**nice))


def _snapshot() -> dict[int, tuple[int, int]]:
    """tid -> (total runnable wait in ns, timeslices run) for every thread now."""
    out = {}
    for task in PROC_ROOT.glob("[0-9]*/task/[0-9]*/schedstat"):
        with contextlib.suppress(OSError, ValueError):
            _run, wait, slices = (int(x) for x in task.read_text().split()[:3])
            out[int(task.parent.name)] = (wait, slices)
    return out


def _nice(tid: int) -> int:
    """A thread's nice value (proc(5) stat field 19); 0 when it is gone."""
    fields = procstat.stat_fields(str(PROC_ROOT / str(tid) / "stat"))  # /proc/TID: any thread
    try:
        return int(fields[16]) if fields else 0
    except (ValueError, IndexError):
        return 0
