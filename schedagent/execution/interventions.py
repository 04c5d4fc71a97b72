"""Interventions: every kind of change schedagent can make to how a workload is scheduled.

A sched_ext policy is one kind; EEVDF's own knobs on threads (``kernel.knobs``) are the
others. This module is the one privileged path for the knobs, as ``engine`` is for the
policies: a knob is checked (bounds, the RT throttle, the privilege it needs) before it
is applied, every thread's state is journaled in the store before it changes, and it is
put back exactly when the block ends. A dead holder's threads are put back by
``engine.recover_knobs`` the next time anything runs.

``catalogue`` lists the kinds with their intrusiveness rank, what each changes and how
it is undone: what ``list_interventions`` answers over MCP and the daemon's socket.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

from schedagent.errors import ConfigError, TargetGone, TargetRefused
from schedagent.execution import engine
from schedagent.kernel import knobs, partial
from schedagent.models import INTRUSIVENESS, Knob, Target
from schedagent.store import Store

_RESTORE = "each thread's policy, nice, priority and slice written back as read before"

#: every kind, least intrusive first: (kind, example, what it changes, how it is undone);
#: the ranks are ``models.INTRUSIVENESS``
KINDS: list[tuple[str, str, str, str]] = [
    (
        "nice",
        "nice:-10",
        "the target's threads' nice level (their EEVDF weight)",
        _RESTORE,
    ),
    (
        "slice",
        "slice:1ms",
        "the target's threads' EEVDF custom slice (sched_setattr sched_runtime, Linux 6.12+)",
        _RESTORE,
    ),
    (
        "others-batch",
        "others-batch",
        "the workload's background load moved to SCHED_BATCH",
        _RESTORE,
    ),
    (
        "others-idle",
        "others-idle",
        "the workload's background load moved to SCHED_IDLE",
        _RESTORE,
    ),
    (
        "fifo",
        "fifo:1",
        "the target's threads to SCHED_FIFO, under the kernel's RT throttle",
        _RESTORE,
    ),
    (
        "rr",
        "rr:1",
        "the target's threads to SCHED_RR, under the kernel's RT throttle",
        _RESTORE,
    ),
    (
        "partial",
        "target",
        "the target's threads moved to a sched_ext policy; every other task stays on EEVDF",
        "each moved thread's previous policy written back (journaled), the policy detached",
    ),
    (
        "policy",
        "target",
        "every task's scheduler: a sched_ext BPF policy for the whole system",
        "the policy detached (the kernel falls back to EEVDF, also if its holder dies)",
    ),
]


def catalogue() -> list[dict[str, object]]:
    """Every kind of intervention, least intrusive first, as JSON-ready records."""
    return [
        {
            "kind": kind,
            "rank": INTRUSIVENESS[kind],
            "example": example,
            "changes": changes,
            "undo": undo,
            "crash_safe": (
                "journaled in the store before each thread changes; put back by the next "
                "schedagent run if the holder dies"
                if kind not in ("partial", "policy")
                else "the kernel drops the policy when its holder's link closes; moved "
                "threads are journaled and put back by the next run"
            ),
        }
        for kind, example, changes, undo in KINDS
    ]


def check_knob(spec: str, caller_uid: int | None = None) -> Knob:
    """The knob parsed and allowed on this host for this caller, or a ConfigError saying
    why not and what to do: its bounds, the RT throttle for SCHED_FIFO/RR, a kernel that
    honours a custom slice, root for schedagent itself (putting a thread back to a higher
    priority than a knob left it needs CAP_SYS_NICE), and for a caller that is not root
    (``caller_uid``, the daemon socket's peer) no raised priority, as its own rights."""
    knob = Knob.parse(spec)
    knobs.check_allowed(knob)
    if os.geteuid() != 0:
        raise ConfigError(
            f"{knob.label}: EEVDF knobs need schedagent to run as root: putting a thread "
            "back after a knob may raise its priority, which needs CAP_SYS_NICE; run it as "
            "root (or through the daemon)"
        )
    raises = (knob.kind == "nice" and knob.value < 0) or knob.kind in ("fifo", "rr")
    if raises and caller_uid not in (None, 0):
        raise ConfigError(
            f"{knob.label}: raising a thread's priority needs root, and this request came "
            f"from uid {caller_uid}; ask an administrator, or use a knob that raises none "
            f"(nice:N with N >= 0, slice:T)"
        )
    return knob


def _checked(tgids: list[int], caller_uid: int | None, what: str) -> list[int]:
    """Every process a knob will touch, checked as a canary's target is (not init, not
    schedagent, not a kernel thread; the caller's own for a caller that is not root), and
    never schedagent's own ancestors (a knob on them would reach schedagent's peers)."""
    mine = _mine()
    out = []
    for tgid in tgids:
        try:
            partial.check_pid(tgid, caller_uid, canary=True)
        except TargetGone:
            continue  # exited since it was listed
        if tgid in mine:
            raise ConfigError(
                f"{what} includes process {tgid}, which is schedagent or one of its "
                "ancestors; name the service's own pid or cgroup"
            )
        out.append(tgid)
    return out


def _admission(caller_uid: int | None) -> Callable[[int], str | None]:
    """The same checks as ``_checked``, for a process that joins a held target later
    (a job forked, a cgroup joined, a setuid program exec'd by the caller's own)."""
    mine = _mine()

    def why_not(tgid: int) -> str | None:
        if tgid in mine:
            return "schedagent or one of its ancestors"
        try:
            partial.check_pid(tgid, caller_uid, canary=True)
        except TargetGone:
            return "gone, or not the caller's own process"
        except TargetRefused as err:
            return str(err).split(";")[0]
        return None

    return why_not


def _mine() -> set[int]:
    """schedagent and its ancestors."""
    try:
        return {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    except psutil.Error:
        return {os.getpid()}


@contextmanager
def knob_session(
    spec: str,
    store: Store,
    target: Target | None = None,
    caller_uid: int | None = None,
    others: list[int] | None = None,
) -> Iterator[knobs.KnobSession]:
    """Hold a knob for a ``with`` block, journaled in ``store``, and put every thread back
    when it ends, however it ends. With a ``target``, its processes get the knob at once
    (a TargetGone says it is gone); without one the caller names the threads
    (``set_targets``/``set_others``, as the bench does). Every process of the target
    (a pid's tree, a cgroup's members) and of ``others`` is checked as a canary's target
    is: not init (``init.scope`` included), not schedagent or its ancestors, not a kernel
    thread, and only the caller's own processes for a caller that is not root."""
    knob = check_knob(spec, caller_uid)
    if target is not None and target.pid is not None:
        partial.check_pid(target.pid, caller_uid, canary=True)
    if knob.on_others and target is not None and not others:
        raise ConfigError(
            f"{knob.label} acts on the competing work, and none was named; name it (tune "
            "--others PID) or try a knob on the target (nice:-10)"
        )
    mine = (
        _checked(partial.target_tgids(target), caller_uid, target.describe())
        if target is not None
        else []
    )
    theirs = []
    for pid in others or []:
        partial.check_pid(pid, caller_uid, canary=True)
        theirs += [t for t in _checked(_tree(pid), caller_uid, f"pid {pid}") if t not in mine]
    engine.recover_knobs(store)
    held = knobs.KnobSession(knob, journal=store, admit=_admission(caller_uid))
    store.add_event(
        "knob-applied", None, knob=knob.label, target=target.describe() if target else None
    )
    try:
        if target is not None:
            held.set_targets(mine)
        if others:
            held.set_others(theirs)
        yield held
    finally:
        restored = held.restore()
        store.add_event(
            "knob-restored",
            None,
            knob=knob.label,
            threads=restored,
            not_restored={str(t): why for t, why in held.unrestored.items()},
        )


def _tree(pid: int) -> list[int]:
    """A named competitor's processes; none once it is gone."""
    try:
        return partial.target_tgids(Target(pid=pid))
    except TargetGone:
        return []
