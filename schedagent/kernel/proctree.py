"""Stop a process this program started, with every process it started in turn.

One way to do it for the bench runner, the compiler sandbox, the testbed runner, the
scripts and the tests. A process started with ``start_new_session=True`` leads its own
process group, and the group catches descendants that have been reparented away from
the tree; the tree (from ``partial.process_tree``) catches descendants that left the
group. A process that shares our group (started without a new session) is only ever
signalled by pid: signalling its group would signal us.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from typing import AnyStr

from schedagent.errors import TargetGone
from schedagent.kernel import partial

log = logging.getLogger(__name__)


def stop_tree(
    proc: subprocess.Popen[AnyStr], sig: int = signal.SIGKILL, grace_s: float = 5.0
) -> AnyStr | None:
    """Stop ``proc`` and its descendants, reap it, and return its piped stdout (or None).

    A ``sig`` other than SIGKILL is a polite request first (SIGINT lets a workload print
    its results, SIGTERM lets a VM shut down); if ``proc`` has not exited ``grace_s``
    later, it and its tree get SIGKILL. Before SIGKILL it is paused, so it starts no
    more children while its tree is read (stress-ng's workers outlive a parent killed
    first). Returns None, with a warning, when ``proc`` is still not reaped ``grace_s``
    after SIGKILL.
    """
    if proc.returncode is not None:  # reaped already: its pid may be another process's now
        return _collect(proc, grace_s)
    leader = _leads_group(proc.pid)  # not reaped (maybe a zombie): the pid is still ours
    if sig != signal.SIGKILL:
        _signal_tree(proc.pid, sig, leader)
        try:
            out: AnyStr | None = proc.communicate(timeout=grace_s)[0]
            return out
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGSTOP)
    _signal_tree(proc.pid, signal.SIGKILL, leader)
    return _collect(proc, grace_s)


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal_tree(pid: int, sig: int, leader: bool) -> None:
    """``sig`` to the group ``pid`` leads, if it does, and to each process of its tree
    outside that group (each process gets ``sig`` once)."""
    try:
        tree = partial.process_tree(pid)
    except TargetGone:
        tree = []
    if leader:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
    for member in [*(p for p in tree if p != pid), pid]:
        if leader and _in_group(member, pid):
            continue  # the group signal reached it
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return True  # gone: nothing to signal


def _collect(proc: subprocess.Popen[AnyStr], grace_s: float) -> AnyStr | None:
    try:
        out: AnyStr | None = proc.communicate(timeout=grace_s)[0]
        return out
    except subprocess.TimeoutExpired:
        log.warning(
            "pid %d is still not reaped %.0f s after SIGKILL (in uninterruptible "
            "sleep, or a process outside its tree holds its output open)",
            proc.pid,
            grace_s,
        )
        return None
