"""The host facts and knobs the daemon needs, on the execution side.

The daemon is a front end: it may not import ``schedagent.kernel`` itself (the layering
test enforces that). What it needs from the kernel modules is exposed here as thin
functions. Each one looks its kernel function up at call time, so a test that replaces
``scx.read_state`` or ``cgroupfs.CGROUP_ROOT`` reaches the daemon too.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from schedagent.kernel import cgroupfs, observer, peers, procstat, scx, starvation, toolchain
from schedagent.kernel.scx import ScxState
from schedagent.kernel.starvation import Starvation


def sched_ext_state() -> ScxState:
    """A snapshot of sched_ext's sysfs state (``present`` is False without sched_ext)."""
    return scx.read_state()


def wait_until_disabled(timeout_s: float) -> bool:
    """Wait (at most ``timeout_s``) for sched_ext to be disabled; whether it is."""
    ok, _snap = scx.wait_for(lambda s: s.state == "disabled", timeout_s)
    return ok


def kernel_build_id() -> str:
    """The running kernel's build id: what quarantine entries and built objects are keyed by."""
    return toolchain.kernel_build_id()


def priority() -> AbstractContextManager[str]:
    """Raise this thread's priority for a ``with`` block, restoring the old policy after."""
    return procstat.priority()


def raise_priority() -> str:
    """Keep the calling thread on time beside CPU hogs (SCHED_FIFO 1, else nice -10).

    Returns what it did."""
    return procstat.raise_priority()


def cgroup_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted."""
    return cgroupfs.CGROUP_ROOT


def normalize_cgroup(cgroup: str) -> str:
    """The canonical relative form of a cgroup path; ``TargetRefused`` for one that could
    leave the cgroup fs (``..``, empty names, control characters)."""
    return cgroupfs.normalize(cgroup)


def cgroup_ids(cgroup: str, filename: str = "cgroup.procs") -> list[int]:
    """The ids in a cgroup's ``cgroup.procs`` (or ``cgroup.threads``), read confined to the
    cgroup fs; ``TargetRefused`` when the path is not a cgroup there."""
    return cgroupfs.read_ids(cgroup, filename)


def starvation_scan(window_s: float, limit_ms: float) -> Starvation:
    """The system's most starved thread over a window, for its niceness (blocks
    ``window_s``); see :func:`schedagent.kernel.starvation.scan`."""
    return starvation.scan(window_s, limit_ms)


def allowed_wait_ms(limit_ms: float, nice: int) -> float:
    """The wait per timeslice a thread of this niceness may see before it counts as starved."""
    return starvation.allowed_wait_ms(limit_ms, nice)


def observer_start() -> str | None:
    """Compile (once per kernel) and attach this process's observer with its cost
    measured (the daemon reports it); why not, or None."""
    observer.report_cost()
    return None if observer.shared() is not None else observer.unavailable()


def observer_status() -> dict[str, object]:
    """The observer's state and its own cost so far (kernel BPF statistics), for
    ``status`` and the metrics endpoint. Never attaches it."""
    obs = observer.current()
    if obs is None:
        return {"attached": False, "reason": observer.unavailable() or "not attached yet"}
    cost = obs.cost()
    return {
        "attached": True,
        "cost_measured": cost.measured,
        "cpu_pct_of_one_core": round(cost.cpu_pct, 4),
        "run_ns": cost.run_ns,
        "events": cost.events,
        "ns_per_event": round(cost.ns_per_event, 1),
        "programs": cost.programs,
        "attached_s": round(cost.attached_s, 1),
        "groups_watched": obs.groups_watched(),
        "threads_dropped": cost.dropped,
    }


def peer_groups(pid: int) -> set[int]:
    """The supplementary group ids of a socket peer's process (empty when it is gone)."""
    return peers.supplementary_groups(pid)


__all__ = [
    "ScxState",
    "Starvation",
    "allowed_wait_ms",
    "cgroup_ids",
    "cgroup_root",
    "kernel_build_id",
    "normalize_cgroup",
    "observer_start",
    "observer_status",
    "peer_groups",
    "priority",
    "raise_priority",
    "sched_ext_state",
    "starvation_scan",
]
