"""Find a configured target on the running system.

A pattern only chooses which processes to look at. What they are is decided later
by the profile, from behaviour; the command line is never used for that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil

from schedagent.daemon.config import Match
from schedagent.kernel import partial

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _unit_cgroup(unit: str, root: Path = CGROUP_ROOT) -> str | None:
    """The cgroup v2 path of a systemd unit, relative to the cgroup root."""
    for path in (root / "system.slice" / unit, *root.glob(f"**/{unit}")):
        if (path / "cgroup.procs").is_file():
            return str(path.relative_to(root))
    return None


def _command_root(pattern: str) -> int | None:
    """The oldest matching process whose parent does not match (a process tree's root)."""
    regex = re.compile(pattern)
    me = os.getpid()
    matches: dict[int, tuple[float, int]] = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "create_time", "status"]):
        info = proc.info
        if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(info["cmdline"] or [])
        if cmdline and regex.search(cmdline):
            matches[info["pid"]] = (info["create_time"], info["ppid"])
    roots = [(created, pid) for pid, (created, ppid) in matches.items() if ppid not in matches]
    return min(roots)[1] if roots else None


def find(match: Match) -> partial.Target | None:
    """The target this match selects right now, or None when nothing matches."""
    if match.command:
        pid = _command_root(match.command)
        return partial.Target(pid=pid) if pid is not None else None
    cgroup = _unit_cgroup(match.unit) if match.unit else match.cgroup
    if cgroup is None:
        return None
    procs = CGROUP_ROOT / cgroup.lstrip("/") / "cgroup.procs"
    try:
        if not procs.read_text().split():
            return None  # an empty cgroup has nothing to tune
    except OSError:
        return None
    return partial.Target(cgroup=cgroup.lstrip("/"))
