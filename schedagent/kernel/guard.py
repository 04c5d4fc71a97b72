"""Watch an attached scheduler and roll back in escalating steps.

The guard polls sched_ext's sysfs every ``poll_s`` (50 ms by default) and the
kernel log, and reports within a second when the scheduler was ejected (stall,
``scx_bpf_error``, runtime error, SysRq) or when a foreign scheduler took over.
Rollback escalates: destroy the link, close the object, and only if our
scheduler is still the one enabled, SysRq-S. Every step ends by checking that
``state == disabled``. A foreign scheduler is never touched.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from schedagent.kernel import procstat, scx
from schedagent.kernel.kmsg import KmsgLine, KmsgReader
from schedagent.kernel.loader import AttachedScheduler, ExitInfo

log = logging.getLogger(__name__)

SYSRQ_TRIGGER = Path("/proc/sysrq-trigger")


class GuardEventKind(str, Enum):
    """Why the guard fired."""

    EJECTED = "ejected"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """What the guard saw when our scheduler stopped being the active one."""

    kind: GuardEventKind
    state: str
    active_ops: str | None
    exit_info: ExitInfo | None
    kernel_log: list[str]
    detected_monotonic_s: float
    kernel_ts_us: int | None

    @property
    def detection_latency_ms(self) -> float | None:
        """Kernel log timestamp of the ejection to our detection, when both are known."""
        if self.kernel_ts_us is None:
            return None
        return (self.detected_monotonic_s * 1e6 - self.kernel_ts_us) / 1000.0

    def reason(self) -> str:
        """One line saying what happened, in the kernel's words where possible."""
        if self.kind is GuardEventKind.FOREIGN and self.exit_info is None:
            return f"foreign scheduler {self.active_ops!r} is active"
        if self.exit_info is not None:
            text = self.exit_info.kind_name
            if self.exit_info.reason and self.exit_info.reason != text:
                text += f": {self.exit_info.reason}"
            if self.exit_info.message:
                text += f": {self.exit_info.message}"
            return text
        return "; ".join(self.kernel_log[-3:]) or f"state became {self.state}"


class Guard:
    """A background thread that watches one attached scheduler."""

    def __init__(
        self, sched: AttachedScheduler, poll_s: float = 0.05, kmsg: KmsgReader | None = None
    ) -> None:
        self.sched, self.poll_s = sched, poll_s
        self._kmsg = kmsg if kmsg is not None else KmsgReader()
        self._log: list[KmsgLine] = []
        self._event: GuardEvent | None = None
        self._fired = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="schedagent-guard", daemon=True)

    def start(self) -> Guard:
        """Start watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (does not detach)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._kmsg.close()

    def wait(self, timeout_s: float | None) -> GuardEvent | None:
        """Block until the guard fires or the timeout passes."""
        self._fired.wait(timeout_s)
        return self._event

    @property
    def event(self) -> GuardEvent | None:
        """The event, once fired."""
        return self._event

    def _run(self) -> None:
        # the guard must see an ejection within a second even under a scheduler that
        # starves everything but its favourites
        procstat.raise_priority()
        prefixes = ("sched_ext", f"{self.sched.name}:")
        while not self._stop.is_set():
            self._log.extend(self._kmsg.read(prefixes))
            snap = scx.read_state()
            if not self.sched.is_ours(snap) and snap.state != "disabling":
                self._event = self._describe(snap, prefixes)
                log.warning("guard: %s %s", self._event.kind.value, self._event.reason())
                self._fired.set()
                return
            self._stop.wait(self.poll_s)

    def _describe(self, snap: scx.ScxState, prefixes: tuple[str, ...]) -> GuardEvent:
        detected = time.monotonic()
        info = None
        deadline = detected + 0.3  # ops.exit runs just before the state flips
        while info is None and time.monotonic() < deadline:
            info = self.sched.obj.exit_info()
            if info is None:
                time.sleep(0.01)
        # the kernel prints "... disabled (reason)" from its disable work, which may run
        # after the state flips; give it a moment so the event carries the kernel's words
        deadline = time.monotonic() + (0.5 if self._kmsg.available else 0.0)
        while True:
            self._log.extend(self._kmsg.read(prefixes))
            if any("disabled" in line.text for line in self._log) or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        ts = next((line.ts_us for line in self._log if "disabled" in line.text), None)
        foreign = snap.is_enabled and (
            snap.ops != self.sched.name or snap.enable_seq != self.sched.enable_seq
        )
        kind = GuardEventKind.FOREIGN if foreign and info is None else GuardEventKind.EJECTED
        return GuardEvent(
            kind, snap.state, snap.ops, info, [line.text for line in self._log], detected, ts
        )


@dataclass(frozen=True, slots=True)
class RollbackStep:
    """One rollback step and what the kernel showed after it."""

    action: str
    state_after: str
    ok: bool
    elapsed_ms: float


@dataclass(slots=True)
class RollbackReport:
    """Every step taken, and whether sched_ext ended disabled (or foreign-owned)."""

    steps: list[RollbackStep] = field(default_factory=list)
    final_state: str = "unknown"
    foreign_ops: str | None = None

    @property
    def ok(self) -> bool:
        """Whether our scheduler is gone."""
        return any(s.ok for s in self.steps) or not self.steps


def rollback(sched: AttachedScheduler, step_timeout_s: float = 2.0) -> RollbackReport:
    """Remove our scheduler, escalating until ``state == disabled`` is confirmed."""
    report = RollbackReport()

    def gone(s: scx.ScxState) -> bool:
        return not sched.is_ours(s) and s.state != "disabling"

    for action in ("destroy link", "close object", "sysrq-S"):
        snap = scx.read_state()
        if gone(snap):
            break
        started = time.monotonic()
        if action == "destroy link":
            sched.detach(timeout_s=0)
        elif action == "close object":
            sched.obj.close()
        elif snap.ops == sched.name and snap.enable_seq == sched.enable_seq:
            SYSRQ_TRIGGER.write_text("S")
        ok, snap = scx.wait_for(gone, step_timeout_s)
        elapsed = (time.monotonic() - started) * 1000
        report.steps.append(RollbackStep(action, snap.state, ok, elapsed))
        log.info("rollback step %s: state %s after %.1f ms", action, snap.state, elapsed)
        if ok:
            break
    final = scx.read_state()
    report.final_state = final.state
    if final.is_enabled and final.ops != sched.name:
        report.foreign_ops = final.ops
    return report
