"""Return to EEVDF when the store cannot say who holds the scheduler.

``schedagent rollback`` normally reads the active record (owner pid, enable_seq) from
the store. When the store is missing, corrupted or read-only, the kernel still knows:
the struct_ops link is an open ``bpf_link`` file descriptor of its holder. So this
finds the holders of a struct_ops link, signals those that are schedagent (SIGTERM,
then SIGKILL: closing the fd detaches, the dead-man switch), and as a last resort
writes ``S`` to /proc/sysrq-trigger. A scheduler held by anything else is not ours
and is left alone.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from schedagent.errors import KernelError, SchedExtBusy
from schedagent.kernel import scx

log = logging.getLogger(__name__)

#: Read at call time, so tests point them at a tmp tree.
PROC = Path("/proc")
SCX_ROOT = scx.SCX_ROOT
SYSRQ_TRIGGER = Path("/proc/sysrq-trigger")


@dataclass(frozen=True, slots=True)
class EmergencyRollback:
    """What was done without the store, and why the store was not used."""

    action: str
    state_before: str
    state_after: str
    ops_before: str | None
    note: str


def struct_ops_link_holders() -> list[int]:
    """Pids holding a struct_ops ``bpf_link`` fd (fdinfo ``link_type: struct_ops``)."""
    holders = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) != "anon_inode:bpf_link":
                    continue
                info = (entry / "fdinfo" / fd.name).read_text()
            except OSError:
                continue
            if any(
                line.split(":", 1)[-1].strip() == "struct_ops"
                for line in info.splitlines()
                if line.startswith("link_type")
            ):
                holders.append(int(entry.name))
                break
    return holders


def is_schedagent(pid: int) -> bool:
    """Whether ``pid`` runs schedagent (its command line names the program or module)."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(
        Path(a.decode(errors="replace")).name == "schedagent" or a == b"schedagent"
        for a in argv[:3]
    )


def sysrq_disable_sched_ext() -> None:
    """The last resort: sysrq-S (write ``S`` to /proc/sysrq-trigger), with which the
    kernel disables whatever sched_ext scheduler is loaded and returns tasks to EEVDF."""
    SYSRQ_TRIGGER.write_text("S")


def release_without_store(why: str, timeout_s: float = 5.0) -> EmergencyRollback:
    """Disable schedagent's scheduler using only the kernel's view; say what was done."""
    before = scx.read_state(SCX_ROOT)
    note = f"the store was not used ({why})"
    if not before.is_enabled:
        return EmergencyRollback("nothing active", before.state, before.state, before.ops, note)
    ours = [p for p in struct_ops_link_holders() if p != os.getpid() and is_schedagent(p)]
    if not ours:
        raise SchedExtBusy(before.ops)  # held by someone else: never ours to remove

    def gone(s: scx.ScxState) -> bool:
        return not (s.is_enabled and s.enable_seq == before.enable_seq)

    action, snap = "", before
    for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, "SIGKILL")):
        action = f"{name} to link holder(s) {', '.join(map(str, ours))}"
        for pid in ours:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        ok, snap = scx.wait_for(gone, timeout_s, SCX_ROOT, poll_s=0.02)
        if ok:
            break
    else:
        action = "sysrq-S"
        sysrq_disable_sched_ext()
        ok, snap = scx.wait_for(gone, timeout_s, SCX_ROOT, poll_s=0.02)
        if not ok:
            raise KernelError(
                f"rollback without the store did not disable {before.ops}: "
                f"state {snap.state} after SIGTERM, SIGKILL and sysrq-S; "
                "reboot if the system misbehaves"
            )
    log.warning("rollback without the store: %s; state %s -> %s", action, before.state, snap.state)
    return EmergencyRollback(action, before.state, snap.state, before.ops, note)
