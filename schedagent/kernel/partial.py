"""Partial-mode canary: move only chosen tasks to SCHED_EXT, and back.

With ``SCX_OPS_SWITCH_PARTIAL`` only tasks whose policy is ``SCHED_EXT`` run on
the BPF scheduler. A target is a pid with all its threads and children, or a
cgroup. Every switched thread's previous policy is recorded first, so it can be
restored afterwards, even after an error or a crash (the store keeps the list).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from schedagent.errors import ConfigError, TargetGone, TargetRefused
from schedagent.kernel import cgroupfs
from schedagent.kernel.scx import SCHED_EXT
from schedagent.models import Target

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SwitchedTask:
    """A thread moved to SCHED_EXT and the policy it had before."""

    tid: int
    policy: int
    priority: int


def target_tids(target: Target) -> list[int]:
    """All thread ids of the target right now (a pid's tree, or the cgroup's threads)."""
    if target.pid is not None:
        tids = sorted({tid for _, tid in threads_of(process_tree(target.pid))})
        if not tids:  # exited between finding the tree and listing its threads
            raise TargetGone(target.pid)
        return tids
    if target.cgroup is not None:
        return cgroupfs.read_ids(target.cgroup, "cgroup.threads")
    raise ConfigError("a target needs a pid or a cgroup")


def target_tgids(target: Target) -> list[int]:
    """Process ids (tgids) of the target: the pid and its children, or the cgroup's procs."""
    if target.pid is not None:
        try:
            if psutil.Process(target.pid).status() == psutil.STATUS_ZOMBIE:
                raise TargetGone(target.pid)  # exited, not yet reaped by its parent
        except psutil.NoSuchProcess as err:
            raise TargetGone(target.pid) from err
        return process_tree(target.pid)
    if target.cgroup is None:
        raise ConfigError("a target needs a pid or a cgroup")
    return cgroupfs.read_ids(target.cgroup, "cgroup.procs")


def target_threads(target: Target) -> list[tuple[int, int]]:
    """(tgid, tid) pairs of the target's processes right now (see ``target_tgids``)."""
    return threads_of(target_tgids(target))


def process_tree(pid: int) -> list[int]:
    """The pid and all its descendants, sorted; TargetGone if the pid does not exist."""
    found = descendants(pid)
    if found is None:  # no /proc/PID/task/TID/children: scan every process
        try:
            proc = psutil.Process(pid)
            found = {pid, *(c.pid for c in proc.children(recursive=True))}
        except psutil.NoSuchProcess as err:
            raise TargetGone(pid) from err
    return sorted(found)


def threads_of(tgids: Iterable[int]) -> list[tuple[int, int]]:
    """(tgid, tid) of every thread of these processes right now; a process gone is skipped."""
    pairs: list[tuple[int, int]] = []
    for tgid in tgids:
        try:
            pairs.extend((tgid, int(t)) for t in os.listdir(f"/proc/{tgid}/task"))
        except OSError:
            continue
    return pairs


#: task flag of kernel threads (include/linux/sched.h), field 9 of /proc/PID/stat
PF_KTHREAD = 0x00200000

_PID_FIX = (
    "pass the pid of one of your own running user processes (see `ps -u $USER`); "
    "for a system-wide trial use a cgroup or `policies load --switch-all` as root"
)


def check_pid(pid: int, caller_uid: int | None = None, *, canary: bool = False) -> None:
    """Refuse a pid target that does not exist, that the caller may not act on, or, for a
    canary, that would make the canary system-wide or hit the kernel itself.

    ``caller_uid`` None or 0 is root (the CLI, MCP in process); any other caller may only
    name processes whose real and effective uid are its own.
    """
    try:
        proc = psutil.Process(pid)
        uids = proc.uids()
        ppid = proc.ppid()
    except psutil.NoSuchProcess as err:
        raise TargetGone(pid) from err
    except psutil.AccessDenied as err:
        raise TargetRefused("pid", pid, "a process visible to schedagent", _PID_FIX) from err
    if caller_uid not in (None, 0) and (uids.real != caller_uid or uids.effective != caller_uid):
        # the same answer as for a missing process: a stranger learns nothing about it
        raise TargetGone(pid)
    if not canary:
        return
    if pid == 1 or pid == os.getpid():
        raise TargetRefused(
            "pid",
            pid,
            "a process other than init (pid 1) and schedagent "
            "itself: a canary on it would cover the whole system",
            _PID_FIX,
        )
    if pid == 2 or ppid == 2 or _is_kernel_thread(pid):
        raise TargetRefused("pid", pid, "a user process, not a kernel thread", _PID_FIX)


def _is_kernel_thread(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError as err:
        raise TargetGone(pid) from err
    try:
        flags = int(text.rsplit(")", 1)[1].split()[6])
    except (IndexError, ValueError):
        return True  # an unparsable stat line: refuse rather than guess
    return bool(flags & PF_KTHREAD)


def descendants(pid: int) -> set[int] | None:
    """The pid and all its descendants, from each thread's ``children`` file.

    This reads only the target's own tree, where psutil reads every process on the
    machine: that matters on each pass over a target of hundreds of jobs. None when
    the kernel lacks the files (CONFIG_PROC_CHILDREN); a process that goes away while
    being read just ends its branch.
    """
    if not Path(f"/proc/{pid}/task/{pid}/children").exists():
        return None
    found, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                kids = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def plan_switch(tids: list[int]) -> list[SwitchedTask]:
    """Each thread's current policy, read before anything changes (for the journal)."""
    planned: list[SwitchedTask] = []
    for tid in tids:
        try:
            policy = os.sched_getscheduler(tid)
            prio = os.sched_getparam(tid).sched_priority
        except ProcessLookupError:
            continue
        if policy != SCHED_EXT:
            planned.append(SwitchedTask(tid, policy, prio))
    return planned


def switch_to_ext(planned: list[SwitchedTask]) -> list[SwitchedTask]:
    """Set SCHED_EXT on each planned thread; return those switched (vanished ones skipped)."""
    switched: list[SwitchedTask] = []
    for task in planned:
        try:
            os.sched_setscheduler(task.tid, SCHED_EXT, os.sched_param(0))
        except ProcessLookupError:
            continue
        switched.append(task)
    log.info("switched %d threads to SCHED_EXT", len(switched))
    return switched


def restore(tasks: list[SwitchedTask]) -> int:
    """Give each thread its previous policy back; return how many were restored."""
    restored = 0
    for task in tasks:
        try:
            if os.sched_getscheduler(task.tid) != SCHED_EXT:
                continue
            os.sched_setscheduler(task.tid, task.policy, os.sched_param(task.priority))
            restored += 1
        except (ProcessLookupError, PermissionError):
            continue
    return restored


def on_ext(tid: int) -> bool:
    """Whether the kernel runs this thread on sched_ext right now (/proc/PID/sched)."""
    try:
        for line in Path(f"/proc/{tid}/sched").read_text().splitlines():
            if line.startswith("ext.enabled"):
                return line.split(":")[-1].strip() == "1"
    except OSError:
        return False
    return False
