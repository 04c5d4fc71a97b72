"""What the daemon knows about each configured target, and what of it survives a restart.

A target's decisions (the applied policy and its baseline, backoff, rollback counts)
are kept in the store under ``target:<name>``, and pending proposals in its proposals
table, so a restarted daemon carries on where the last one stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schedagent import services
from schedagent.agent.port import Attached
from schedagent.daemon.config import TargetConfig
from schedagent.execution import measure
from schedagent.models import Features, Target, WorkloadProfile
from schedagent.store import Store


@dataclass(frozen=True, slots=True)
class Baseline:
    """EEVDF's level on the guard's metric, and where it came from."""

    value: float
    metric: str
    source: str
    #: the metric the decision being guarded was made on
    decided_on: str | None = None


@dataclass(slots=True)
class Active:
    """A policy (or EEVDF knob) the daemon applied to a target, and what its guard
    compares against."""

    policy: str  # what the engine resolves: a name or a staged source path
    name: str  # the scheduler's ops name, as the kernel shows it
    tunables: dict[str, int]
    #: the guard's meter: its metric is the one ``baseline`` was measured on under EEVDF
    meter: measure.GuardMeter
    baseline: float
    stack: contextlib.ExitStack
    #: the engine's session for a policy, the knob's session for an EEVDF knob
    session: Attached
    since: float
    last_value: float | None = None
    #: the target's behaviour in the first guard window under this policy: phases are
    #: judged against it (against EEVDF's profile, the policy's own effect would count)
    reference: Features | None = None


@dataclass(slots=True)
class TargetState:
    """What the daemon knows about one configured target."""

    cfg: TargetConfig
    target: Target | None = None
    phase: str = "waiting"  # waiting, observed, proposed, eevdf, active
    profile: WorkloadProfile | None = None
    active: Active | None = None
    regressions: int = 0
    violations: int = 0
    phase_votes: int = 0
    checks: int = 0
    # persisted (kv "target:<name>")
    last_switch: float = 0.0
    backoff_until: float = 0.0
    rollbacks: dict[str, int] = field(default_factory=dict)
    applied: dict[str, Any] | None = None

    def persisted(self) -> dict[str, Any]:
        """The part of this state that is saved in the store."""
        return {
            "last_switch": self.last_switch,
            "backoff_until": self.backoff_until,
            "rollbacks": self.rollbacks,
            "applied": self.applied,
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Take back what :meth:`persisted` saved (missing keys keep their defaults)."""
        self.last_switch = float(saved.get("last_switch", 0.0))
        self.backoff_until = float(saved.get("backoff_until", 0.0))
        self.rollbacks = dict(saved.get("rollbacks") or {})
        self.applied = saved.get("applied")


def _key(ts: TargetState) -> str:
    return f"target:{ts.cfg.name}"


def save(store: Store, ts: TargetState) -> None:
    """Persist one target's decisions."""
    store.kv_set(_key(ts), ts.persisted())


def load(store: Store, targets: Mapping[str, TargetState]) -> None:
    """Restore every target's decisions, and mark targets with a pending proposal."""
    for ts in targets.values():
        saved = store.kv_get(_key(ts))
        if isinstance(saved, dict):
            ts.restore(saved)
    for prop in store.proposals("pending"):
        pending = targets.get(str(prop["target"]))
        if pending is not None:
            pending.phase = "proposed"


def view(ts: TargetState) -> dict[str, Any]:
    """One target as the API shows it (read once: the loop may change it meanwhile)."""
    active, target = ts.active, ts.target
    return {
        "selected": target.describe() if target else None,
        "phase": ts.phase,
        "policy": active.name if active else "eevdf",
        "metric": active.meter.metric.name if active else None,
        "last_value": active.last_value if active else None,
        "baseline": active.baseline if active else None,
        "backoff_s": max(0.0, ts.backoff_until - time.time()),
        "rollbacks": dict(ts.rollbacks),
    }


def quarantine_size() -> int:
    """How many policies are quarantined, from a connection of its own: the API's and the
    metrics server's threads keep off the loop's connection."""
    store = services.open_store()
    try:
        return len(store.quarantine_list())
    finally:
        store.close()
