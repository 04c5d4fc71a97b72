"""A target's runqueue wait over one window: from the observer, else from schedstat.

With the observer (``kernel/observer.py``) a window gives histograms of every wait,
woken-to-run and preempted-to-run, with wakeups and migrations. Without it,
``/proc/<pid>/task/<tid>/schedstat`` counts the time each thread spent runnable but
waiting and the timeslices it ran; over a window, the sums of their rises give the
mean wait per timeslice (no percentiles).
"""

from __future__ import annotations

from dataclasses import dataclass

from schedagent.kernel import observer, partial, procstat
from schedagent.models import FineHistogram, Target, WaitTotals, Window


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
    return wait_totals(observer.observe(target, duration_s))


@dataclass(frozen=True, slots=True)
class ObservedWaits:
    """One window of a target's runqueue waits, as the observer saw them."""

    woken: FineHistogram
    preempted: FineHistogram
    totals: WaitTotals
    wakeups: int
    migrations: int
    #: the observer's own cost since it was attached, percent of one CPU
    observer_cpu_pct: float


def observe_histograms(target: Target, duration_s: float) -> ObservedWaits | None:
    """The target's wait histograms over a window; None without the observer."""
    obs = observer.shared()
    if obs is None:
        return None
    group = obs.watch(target, partial.target_tgids(target))
    woken, preempted = obs.wait_hist(group), obs.wait_hist(group, preempted=True)
    before = obs.threads(group)
    with procstat.priority():  # as observer.observe: discovery beside busy jobs
        window = obs.window(target, duration_s)
    wakeups = migrations = 0
    for tid, t in obs.threads(group).items():
        if tid not in window.last:
            continue  # ended before the window
        was = before.get(tid)
        wakeups += t.wakeups - (was.wakeups if was and was.tgid == t.tgid else 0)
        migrations += t.migrations - (was.migrations if was and was.tgid == t.tgid else 0)
    return ObservedWaits(
        obs.wait_hist(group).minus(woken),
        obs.wait_hist(group, preempted=True).minus(preempted),
        wait_totals(window),
        wakeups,
        migrations,
        obs.cost().cpu_pct,
    )
