"""``schedagent daemon``: keep configured targets tuned, guarded, and audited.

For each configured target the daemon

1. finds it (unit, cgroup or command pattern; patterns never decide a class);
2. on a trigger (a new target, a phase change, a persistent SLO violation) profiles
   it and, by mode, reports (``observe``), plans and waits for ``schedagent approve``
   (``propose``), or tunes and applies a proven winner (``auto``);
3. while a policy is active, guards it: the engine's kernel watch, the target's SLO
   metric against the EEVDF baseline, its phase, and starvation of any task on the
   system. A regression rolls back to EEVDF, with backoff, and quarantine after
   repeated rollbacks;
4. records every decision in the audit trail: trigger, profile, SLO, evidence, the
   change, outcome and rationale.

Its state (applied decisions, backoff, rollback counts, proposals) lives in the store,
so a restarted daemon carries on.

The daemon's rooms, one responsibility each:

- ``loop``: the :class:`Daemon` and its poll loop, start-up and shutdown;
- ``control``: the shared state, and the only code that attaches, releases or rolls back;
- ``triggers``: when to profile, propose or tune (settle, backoff, hysteresis, violations);
- ``guard``: the SLO guard, its regression decision and the EEVDF baseline;
- ``state``: each target's state and its persistence; ``api``: the socket's operations;
  ``socketapi``: the socket transport; ``metrics``: the Prometheus text server;
- ``config`` and ``matcher``: the config file, and finding a target on the system.

This module is the entry point (``run``) and keeps the names callers import from it.
"""

from __future__ import annotations

from schedagent.daemon.api import DaemonBusy
from schedagent.daemon.config import DaemonConfig
from schedagent.daemon.loop import Daemon
from schedagent.daemon.state import Active, TargetState
from schedagent.execution import engine, host

#: The old private name of :class:`schedagent.daemon.state.Active`, which tests still import.
_Active = Active


def run(cfg: DaemonConfig) -> None:
    """``schedagent daemon``: needs root and sched_ext (observe mode needs neither)."""
    if cfg.mode != "observe":
        engine.require_sched_ext()
    with host.priority():
        Daemon(cfg).run()


__all__ = ["Daemon", "DaemonBusy", "TargetState", "run"]
