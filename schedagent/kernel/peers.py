"""What the kernel says about a peer process on the daemon's socket (read-only procfs).

``SO_PEERCRED`` gives a peer's pid, uid and primary gid; whether it may use the socket
also depends on its supplementary groups, which only ``/proc/PID/status`` lists.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

PROC_ROOT = Path("/proc")


def supplementary_groups(pid: int) -> set[int]:
    """The supplementary group ids of process ``pid`` (its ``Groups:`` line); an empty set
    when the process is gone or its status is unreadable."""
    groups: set[int] = set()
    with contextlib.suppress(OSError):
        for line in (PROC_ROOT / str(pid) / "status").read_text().splitlines():
            if line.startswith("Groups:"):
                groups |= {int(g) for g in line.split()[1:]}
    return groups
