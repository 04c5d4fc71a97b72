"""The execution port: everything reasoning asks of the system, as one protocol.

Reasoning proposes, execution disposes. ``agent/tune.py`` and ``agent/llm.py`` decide
what to try and judge what was measured; every action on the system (compiling and
verifying a candidate, attaching it, measuring a window, raising priority, reading the
target's command lines, staging a synthesized policy, holding an EEVDF knob) goes
through an ``Executor``.
The real one is ``schedagent.execution.port.LiveExecutor``; tests pass fakes.

Values cross the port as the frozen types of ``schedagent.models`` (``LiveMetric``,
``Sample``, ``VerifyResult``, ``PolicyDraft``, ``WorkloadProfile``), never as kernel
objects.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Protocol

from schedagent.models import (
    LiveMetric,
    PolicyDraft,
    Sample,
    Slo,
    Target,
    VerifyResult,
    WorkloadProfile,
)


class Attached(Protocol):
    """A candidate attached for the duration of a ``with`` block."""

    def problem(self) -> str | None:
        """Why the candidate is no longer running (ejected, replaced), or None."""
        ...

    def placement(self) -> str:
        """Empty when it runs as asked; else how it was confined, and why (a whole-system
        policy kept to the target's threads by the host's cgroup controls)."""
        ...


class Meter(Protocol):
    """Measures one target's live metric, window by window, under whatever runs now."""

    @property
    def metric(self) -> LiveMetric:
        """What each window measures (its name, unit and better direction)."""
        ...

    def measure(self, window_s: float) -> Sample:
        """Watch the target for one window (TargetGone if it is gone at the start)."""
        ...


class Executor(Protocol):
    """What reasoning may ask of the system. Every method may raise a
    ``SchedagentError``; ``TargetGone`` when the target went away."""

    def profile(self, target: Target, duration_s: float, slo: Slo | None) -> WorkloadProfile:
        """Observe the target for ``duration_s`` and classify it (``slo``: given, else
        inferred)."""
        ...

    def verify(self, spec: str, overrides: dict[str, int]) -> VerifyResult:
        """The gates up to the kernel verifier: static gate, clang, object check and a
        load without attach. A rejection raises, with the reason."""
        ...

    def attach(
        self, spec: str, overrides: dict[str, int], target: Target, *, canary: bool
    ) -> AbstractContextManager[Attached]:
        """Attach a candidate with the guard on for a ``with`` block; the previous
        scheduler (EEVDF) is back when it ends. ``canary``: only the target's threads
        move (partial mode), else every task runs on it."""
        ...

    def check_knob(self, spec: str) -> None:
        """An EEVDF knob's gates (``nice:-10``, ``slice:1ms``, ``fifo:1``): its bounds, the
        RT throttle, the privilege it needs. A refusal raises, with the reason."""
        ...

    def hold_knob(
        self, spec: str, target: Target, others: list[int]
    ) -> AbstractContextManager[Attached]:
        """Apply an EEVDF knob for a ``with`` block (journaled first): to the target's
        threads, or for an ``others-`` knob to those of the ``others`` pids; every thread
        is back as it was when it ends."""
        ...

    def meter(
        self, target: Target, slo: Slo, latency_log: str | None
    ) -> AbstractContextManager[Meter]:
        """A meter of the SLO's live metric for a ``with`` block (a probe it needs is
        compiled and attached on entry, and released on exit)."""
        ...

    def planned_metric(self, slo: Slo, latency_log: str | None) -> LiveMetric:
        """What ``meter`` would measure, without attaching anything (for --dry-run)."""
        ...

    def attaches_probe(self, slo: Slo, latency_log: str | None) -> bool:
        """Whether ``meter`` compiles and attaches a probe for this SLO (it takes time)."""
        ...

    def priority(self) -> AbstractContextManager[str]:
        """Raise the calling thread's priority for a ``with`` block; says what it did."""
        ...

    def process_names(self, target: Target) -> list[str]:
        """``name: command line`` of the target's processes (text the system owns)."""
        ...

    def stage_policy(self, draft: PolicyDraft) -> str:
        """Write a synthesized policy where the gates can read it; returns the spec that
        ``verify`` and ``attach`` take for it."""
        ...

    def adopt_policy(self, spec: str) -> str:
        """Keep a staged policy that won where the repository resolves it by name
        (``repo.synthesized_dir()``); returns that name."""
        ...


class Clock(Protocol):
    """Time for the loop: the real one, or a simulated one in tests and simulations."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        ...


class RealClock:
    """The process's monotonic clock."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep()``."""
        time.sleep(seconds)


class ManualClock:
    """A clock whose time passes only when the loop sleeps or a fake measures: tune run
    against a fake executor (the tests) or a simulated world (``scripts/verdict-sim.py``)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        """The simulated time, in seconds since this clock was made."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass at once."""
        self.now += seconds
