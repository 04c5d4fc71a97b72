"""Find a configured target on the running system.

A pattern only chooses which processes to look at. What they are is decided later
by the profile, from behaviour; the command line is never used for that. A command
pattern only sees processes of its configured owner (real and effective uid), so
another user cannot plant a decoy, and it searches a bounded prefix of the command
line with a pattern that ``config.check_pattern`` accepted.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import psutil

from schedagent.daemon.config import MAX_CMDLINE_CHARS, Match, check_pattern
from schedagent.errors import TargetRefused
from schedagent.execution import host
from schedagent.models import Target


def _unit_cgroup(unit: str, root: Path | None = None) -> str | None:
    """The cgroup v2 path of a systemd unit, relative to the cgroup root."""
    base = root if root is not None else host.cgroup_root()
    for path in (base / "system.slice" / unit, *base.glob(f"**/{unit}")):
        if not path.is_symlink() and (path / "cgroup.procs").is_file():
            return str(path.relative_to(base))
    return None


#: one scan of the process table serves every target's match within this many seconds
_SCAN_TTL_S = 1.0
_INFO = ["pid", "ppid", "cmdline", "create_time", "status", "uids"]
_scan: tuple[float, list[dict[str, Any]]] = (float("-inf"), [])


def _processes(fresh_within_s: float = _SCAN_TTL_S) -> list[dict[str, Any]]:
    """Every process's pid, parent, command line, start, state and uids: one scan of the
    process table, reused by every target matched within ``_SCAN_TTL_S`` (a daemon
    watching 100 targets scanned it 100 times a poll)."""
    global _scan
    now = time.monotonic()
    if now - _scan[0] > fresh_within_s:
        _scan = (now, [proc.info for proc in psutil.process_iter(_INFO)])
    return _scan[1]


def _command_root(pattern: str, uid: int) -> int | None:
    """The oldest process of ``uid`` whose command line matches and whose parent does not
    (a process tree's root)."""
    regex = check_pattern(pattern)
    found = _match(regex, uid, _processes())
    # a miss looks again at a scan at most 0.2 s old: a target that just started is found
    return found if found is not None else _match(regex, uid, _processes(0.2))


def _match(regex: re.Pattern[str], uid: int, processes: list[dict[str, Any]]) -> int | None:
    me = os.getpid()
    matches: dict[int, tuple[float, int]] = {}
    for info in processes:
        if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        uids = info["uids"]
        if uids is None or uids.real != uid or uids.effective != uid:
            continue  # someone else's process: never a target, whatever its command line
        cmdline = " ".join(info["cmdline"] or [])[:MAX_CMDLINE_CHARS]
        if cmdline and regex.search(cmdline):
            matches[info["pid"]] = (info["create_time"], info["ppid"])
    roots = [(created, pid) for pid, (created, ppid) in matches.items() if ppid not in matches]
    return min(roots)[1] if roots else None


def find(match: Match) -> Target | None:
    """The target this match selects right now, or None when nothing matches."""
    if match.command:
        pid = _command_root(match.command, match.uid())
        return Target(pid=pid) if pid is not None else None
    cgroup = _unit_cgroup(match.unit) if match.unit else match.cgroup
    if cgroup is None:
        return None
    try:
        if not host.cgroup_ids(cgroup, "cgroup.procs"):
            return None  # an empty cgroup has nothing to tune
    except TargetRefused:
        return None  # absent (or not a cgroup) right now: nothing to tune yet
    return Target(cgroup=host.normalize_cgroup(cgroup))
