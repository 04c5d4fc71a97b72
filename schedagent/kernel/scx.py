"""sched_ext state as the kernel shows it in sysfs (read-only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SCX_ROOT = Path("/sys/kernel/sched_ext")

#: Scheduling policy number of SCHED_EXT (include/uapi/linux/sched.h, since 6.12).
SCHED_EXT = 7

#: ops.exit kinds (enum scx_exit_kind).
EXIT_KINDS = {
    0: "none",
    1: "done",
    64: "unregistered",
    65: "unregistered (bpf)",
    66: "unregistered (kernel)",
    67: "sysrq",
    1024: "error",
    1025: "scx_bpf_error",
    1026: "runnable task stall",
}


@dataclass(frozen=True, slots=True)
class ScxState:
    """One snapshot of /sys/kernel/sched_ext."""

    present: bool
    state: str
    ops: str | None
    enable_seq: int
    switch_all: bool
    nr_rejected: int

    @property
    def is_enabled(self) -> bool:
        """Whether some BPF scheduler is fully enabled."""
        return self.state == "enabled"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_state(root: Path = SCX_ROOT) -> ScxState:
    """Snapshot sched_ext's sysfs; ``present`` is False on kernels without it."""
    state = _read(root / "state")
    if state is None:
        return ScxState(False, "absent", None, 0, False, 0)
    return ScxState(
        present=True,
        state=state,
        ops=_read(root / "root" / "ops"),
        enable_seq=int(_read(root / "enable_seq") or 0),
        switch_all=(_read(root / "switch_all") or "0") == "1",
        nr_rejected=int(_read(root / "nr_rejected") or 0),
    )


def read_events(root: Path = SCX_ROOT) -> dict[str, int]:
    """The active scheduler's event counters (6.15+); empty when none."""
    text = _read(root / "root" / "events")
    events: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            events[parts[0]] = int(parts[1])
    return events


def wait_for(
    predicate: Callable[[ScxState], bool],
    timeout_s: float,
    root: Path = SCX_ROOT,
    poll_s: float = 0.005,
) -> tuple[bool, ScxState]:
    """Poll until ``predicate(state)`` holds or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = read_state(root)
        if predicate(snap):
            return True, snap
        if time.monotonic() >= deadline:
            return False, snap
        time.sleep(poll_s)
