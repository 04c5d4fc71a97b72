"""The daemon's shared state, and the only code that switches a target's scheduler.

Every room of the daemon (the loop, the triggers, the guard, the API, the metrics)
works on one :class:`Control`: the config, the store, each target's state and the lock
that serialises decisions. Attaching a policy (:meth:`Control.apply`), detaching it
(:meth:`Control.release`) and rolling it back with backoff and quarantine
(:meth:`Control.rollback`) happen here and nowhere else, each recorded in the audit trail.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from schedagent import ops, services
from schedagent.agent.port import Attached
from schedagent.daemon import sdnotify, state
from schedagent.daemon.config import DaemonConfig
from schedagent.daemon.state import Active, Baseline, TargetState
from schedagent.errors import SchedagentError
from schedagent.execution import engine, host, interventions, measure
from schedagent.models import Knob
from schedagent.policy import repo
from schedagent.store import Store

log = logging.getLogger(__name__)


class Control:
    """Config, store, targets and lock, with the decisions that change a scheduler."""

    def __init__(self, cfg: DaemonConfig, store: Store | None = None) -> None:
        self.cfg = cfg
        self.store = store or services.open_store()
        self.targets = {t.name: TargetState(t) for t in cfg.targets}
        #: held by every decision; a tune holds it for minutes, so readers take snapshots
        self.lock = threading.RLock()
        self.rollbacks_total = 0
        #: refreshed by the loop and by a tune's progress; the watchdog pings while fresh
        self.heartbeat = time.monotonic()
        self.started = time.time()

    def audit(self, action: str, ts: TargetState | None, detail: dict[str, Any]) -> None:
        """Record one decision (and log it), for a target or for the daemon itself."""
        args: dict[str, object] = {
            "target": ts.cfg.name if ts else None,
            "selected": ts.target.describe() if ts and ts.target else None,
        }
        self.store.audit("daemon", action, args, ops.bounded(detail))
        log.info("%s %s: %s", action, args["target"] or "-", detail)

    def save(self, ts: TargetState) -> None:
        """Persist one target's decisions."""
        state.save(self.store, ts)

    def progress(self, what: str, done: int, total: int) -> None:
        """A long step (a tune) is alive: refresh the heartbeat and tell systemd."""
        self.heartbeat = time.monotonic()
        sdnotify.notify(f"STATUS={what} ({done}/{total})")

    def apply(
        self,
        ts: TargetState,
        policy: str,
        tunables: dict[str, int],
        meter: measure.GuardMeter,
        base: Baseline,
        why: str,
    ) -> None:
        """Attach ``policy`` to the target under the guard; a failure is audited.

        ``policy`` may be an EEVDF knob's label (``nice:-10``, as tune decides one): the
        knob is then held on the target's threads, journaled, under the same guard, and
        released the same way."""
        assert ts.target is not None
        stack = contextlib.ExitStack()
        knob = Knob.is_label(policy)
        sess: Attached
        try:
            if knob:
                sess = stack.enter_context(
                    interventions.knob_session(policy, self.store, ts.target)
                )
                name = policy
            else:
                req = engine.RunRequest(
                    policy, tunables, ts.target, switch_all=True, actor="daemon"
                )
                held = stack.enter_context(engine.session(req, self.store))
                sess, name = held, held.outcome.ops_name
        except SchedagentError as err:
            stack.close()
            self.audit("apply-failed", ts, {"trigger": why, "policy": policy, "error": str(err)})
            return
        ts.active = Active(policy, name, tunables, meter, base.value, stack, sess, time.time())
        ts.phase, ts.regressions, ts.last_switch = "active", 0, time.time()
        ts.applied = {
            "policy": policy,
            "tunables": tunables,
            "baseline": base.value,
            "metric": meter.metric.name,
        }
        self.save(ts)
        self.audit(
            "apply",
            ts,
            {
                "trigger": why,
                "diff": f"eevdf -> {ts.active.name} {tunables}",
                "evidence": {
                    "baseline": base.value,
                    "guard_metric": meter.metric.name,
                    "baseline_metric": base.metric,
                    "decided_on": base.decided_on,
                    "baseline_source": base.source,
                },
                "outcome": (
                    f"EEVDF with {policy} on the target's threads, guard on"
                    if knob
                    else f"{host.sched_ext_state().ops} enabled, guard on"
                ),
            },
        )

    def release(self, ts: TargetState, why: str, keep_applied: bool = False) -> float:
        """Detach the target's policy; return how long the detach took (s).

        ``keep_applied`` keeps the decision saved, so a restarted daemon applies it again.
        """
        active = ts.active
        assert active is not None
        t0 = time.monotonic()
        active.stack.close()
        took = time.monotonic() - t0
        ts.active, ts.phase = None, "eevdf"
        if not keep_applied:
            ts.applied = None
        self.save(ts)
        self.audit(
            "release",
            ts,
            {
                "trigger": why,
                "diff": f"{active.name} -> eevdf",
                "outcome": f"sched_ext {host.sched_ext_state().state}",
                "detach_s": round(took, 3),
            },
        )
        return took

    def rollback(
        self, ts: TargetState, why: str, evidence: dict[str, Any], detected: float
    ) -> None:
        """Release a policy that misbehaved; back off, doubling per rollback, and
        quarantine it on this kernel after ``guard.quarantine_after`` rollbacks."""
        active = ts.active
        assert active is not None
        self.release(ts, f"rollback: {why}")
        took_ms = (time.monotonic() - detected) * 1000
        self.rollbacks_total += 1
        n = ts.rollbacks.get(active.name, 0) + 1
        ts.rollbacks[active.name] = n
        g = self.cfg.guard
        backoff = min(g.backoff_s * 2 ** (n - 1), g.backoff_max_s)
        ts.backoff_until = time.time() + backoff
        quarantined = False
        if n >= g.quarantine_after and not Knob.is_label(active.policy):  # a knob backs off
            src = repo.resolve(active.policy)
            self.store.quarantine(
                src.name,
                src.source_hash(),
                host.kernel_build_id(),
                f"daemon: {n} rollbacks of {active.name}, last: {why}",
            )
            quarantined = True
        self.save(ts)
        self.audit(
            "rollback",
            ts,
            {
                "trigger": why,
                "evidence": evidence,
                "diff": f"{active.name} -> eevdf",
                "outcome": f"sched_ext {host.sched_ext_state().state}",
                "detect_to_eevdf_ms": round(took_ms, 1),
                "backoff_s": backoff,
                "quarantined": quarantined,
                "rationale": f"rollback #{n} of {active.name}",
            },
        )
