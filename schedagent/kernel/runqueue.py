"""A target's runqueue wait from schedstat: the cheap answer when bcc is not installed.

``/proc/<pid>/task/<tid>/schedstat`` counts the time each thread spent runnable but
waiting and the timeslices it ran; over a window, the sums of their rises give the
mean wait per timeslice (no percentiles: that needs the bcc probes).
"""

from __future__ import annotations

from schedagent.kernel import procstat
from schedagent.models import Target, WaitTotals, Window


def wait_totals(window: Window) -> WaitTotals:
    """The rise of every thread's wait and timeslice counters over one window, summed."""
    wait_ns = slices = 0
    for tid, last in window.last.items():
        first = window.first[tid]
        wait_ns += last.wait_ns - first.wait_ns
        slices += last.slices - first.slices
    return WaitTotals(wait_ns, slices, window.duration_s)


def observe_waits(target: Target, duration_s: float) -> WaitTotals:
    """Watch ``target`` for ``duration_s`` and sum its threads' runqueue wait."""
    return wait_totals(procstat.observe(target, duration_s))
