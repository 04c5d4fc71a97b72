"""Partial-mode canary: move only chosen tasks to SCHED_EXT, and back.

With ``SCX_OPS_SWITCH_PARTIAL`` only tasks whose policy is ``SCHED_EXT`` run on
the BPF scheduler. A target is a pid with all its threads and children, or a
cgroup. Every switched thread's previous policy is recorded first, so it can be
restored afterwards, even after an error or a crash (the store keeps the list).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from schedagent.errors import ConfigError, TargetGone
from schedagent.kernel.scx import SCHED_EXT

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """What to move: a pid (with threads and children) or a cgroup path."""

    pid: int | None = None
    cgroup: str | None = None

    def describe(self) -> str:
        """Short text for logs and reports."""
        return f"pid {self.pid}" if self.pid is not None else f"cgroup {self.cgroup}"


@dataclass(frozen=True, slots=True)
class SwitchedTask:
    """A thread moved to SCHED_EXT and the policy it had before."""

    tid: int
    policy: int
    priority: int


def target_tids(target: Target) -> list[int]:
    """All thread ids of the target right now."""
    if target.pid is not None:
        try:
            proc = psutil.Process(target.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess as err:
            raise TargetGone(target.pid) from err
        tids: list[int] = []
        for p in procs:
            try:
                tids.extend(t.id for t in p.threads())
            except psutil.NoSuchProcess:
                continue
        return sorted(set(tids))
    if target.cgroup is not None:
        path = Path("/sys/fs/cgroup") / target.cgroup.lstrip("/")
        try:
            text = (path / "cgroup.threads").read_text()
        except OSError as err:
            raise ConfigError(
                f"cannot read {path}/cgroup.threads ({err.strerror}); pass a cgroup v2 path "
                "relative to /sys/fs/cgroup, e.g. system.slice/nginx.service") from err
        return sorted(int(t) for t in text.split())
    raise ConfigError("a target needs a pid or a cgroup")


def target_tgids(target: Target) -> list[int]:
    """Process ids (tgids) of the target: the pid and its children, or the cgroup's procs."""
    if target.pid is not None:
        try:
            proc = psutil.Process(target.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                raise TargetGone(target.pid)  # exited, not yet reaped by its parent
            found = descendants(proc.pid)
            if found is None:  # no /proc/PID/task/TID/children: scan every process
                found = {proc.pid, *(c.pid for c in proc.children(recursive=True))}
            return sorted(found)
        except psutil.NoSuchProcess as err:
            raise TargetGone(target.pid) from err
    path = Path("/sys/fs/cgroup") / (target.cgroup or "").lstrip("/") / "cgroup.procs"
    try:
        return sorted(int(t) for t in path.read_text().split())
    except OSError as err:
        raise ConfigError(f"cannot read {path} ({err.strerror}); pass a cgroup v2 path "
                          "relative to /sys/fs/cgroup") from err


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
