"""The operations the daemon answers on its socket (the transport is ``socketapi``).

Its own operations (``daemon_status``, ``approve``, ``apply``, ``rollback``,
``proposals``) act on the loop's state; every other operation is the shared one from
``ops``, exactly as the CLI and the MCP server run it. ``daemon_status`` never waits for
the loop's lock (a tune holds it for minutes); the operations that change a scheduler
wait for it, and give up with :class:`DaemonBusy` after a while.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, cast

from schedagent import ops, opspec, services
from schedagent.daemon import guard, state
from schedagent.daemon.control import Control
from schedagent.daemon.state import TargetState
from schedagent.errors import ConfigError, SchedagentError
from schedagent.execution import engine, host, measure

#: the operations this daemon answers itself (the rest are ``ops``'s shared ones)
_OWN = frozenset({"daemon_status", "approve", "apply", "proposals", "rollback"})

#: How long an operation that changes a scheduler waits for the loop (a tune holds it).
BUSY_TIMEOUT_S = 300.0


class DaemonBusy(SchedagentError):
    """An API request waited too long for the daemon's loop."""


class Api:
    """The request handler for ``socketapi.ApiServer``, over one daemon's :class:`Control`."""

    def __init__(self, ctl: Control) -> None:
        self.ctl = ctl

    def handle(self, op: str, args: dict[str, Any], actor: str) -> dict[str, Any]:
        """One socket request: the daemon's own operations, or a shared one from ops.

        The daemon's own are validated against their models in ``opspec`` first, exactly
        as ``ops.call`` validates the shared ones: a bad argument is refused by name."""
        if op not in _OWN:
            return ops.call(op, args, actor)
        parsed = ops.validate(op, args)
        if isinstance(parsed, opspec.ApproveArgs):
            return self.approve(parsed.id, actor)
        if isinstance(parsed, opspec.ApplyArgs):
            return self.force_apply(parsed.model_dump(), actor)
        if isinstance(parsed, opspec.ProposalsArgs):
            store = services.open_store()  # the API's threads keep off the loop's connection
            try:
                return {"proposals": store.proposals(parsed.status)}
            finally:
                store.close()
        if op == "rollback":
            return self.rollback_now(actor)
        return self.status()

    def status(self) -> dict[str, Any]:
        """A snapshot, without the loop's lock: a tune holds that for minutes."""
        ctl = self.ctl
        snapshot = ops.bounded(
            {
                "pid": os.getpid(),
                "mode": ctl.cfg.mode,
                "uptime_s": time.time() - ctl.started,
                "sched_ext": asdict(host.sched_ext_state()),
                "rollbacks_total": ctl.rollbacks_total,
                "quarantine": state.quarantine_size(),
                "observer": host.observer_status(),
                "targets": {name: state.view(ts) for name, ts in ctl.targets.items()},
            }
        )
        return cast(dict[str, Any], snapshot)  # bounded() keeps a dict a dict

    @contextlib.contextmanager
    def _busy_lock(self, what: str, timeout_s: float = BUSY_TIMEOUT_S) -> Iterator[None]:
        """The loop's lock for an API request; a clear error when a tune keeps it."""
        if not self.ctl.lock.acquire(timeout=timeout_s):
            raise DaemonBusy(
                f"{what}: the daemon has been busy (tuning) for {timeout_s:.0f} s; "
                "try again when `schedagent status` shows it idle"
            )
        try:
            yield
        finally:
            self.ctl.lock.release()

    def approve(self, proposal_id: object, actor: str) -> dict[str, Any]:
        """Apply a pending proposal under the guard, after measuring EEVDF's baseline."""
        if not isinstance(proposal_id, int) or isinstance(proposal_id, bool):
            raise ConfigError(
                f"approve needs an integer proposal id, got {proposal_id!r}; see "
                "`schedagent history` for pending proposals"
            )
        ctl = self.ctl
        with self._busy_lock("approve"):
            prop = next((p for p in ctl.store.proposals() if p["id"] == proposal_id), None)
            if prop is None or prop["status"] != "pending":
                pending = [p["id"] for p in ctl.store.proposals("pending")]
                raise ConfigError(
                    f"no pending proposal {proposal_id}; pending: {pending or 'none'}"
                )
            ts = ctl.targets.get(str(prop["target"]))
            if ts is None or ts.target is None:
                raise ConfigError(
                    f"the target of proposal {proposal_id} ({prop['target']}) is "
                    "not running now; nothing applied"
                )
            ctl.store.set_proposal_status(proposal_id, "approved")
            tunables = cast(dict[str, int], prop["tunables"])  # stored from a proposal's dict
            self._apply_measured(ts, str(prop["policy"]), dict(tunables), f"approved by {actor}")
            return self.status()

    def force_apply(self, args: dict[str, Any], actor: str) -> dict[str, Any]:
        """Apply a verified artifact to a configured target under the guard (operator use)."""
        ctl = self.ctl
        name, ref = args.get("target"), args.get("policy")
        tunables = args.get("tunables") or {}
        if name not in ctl.targets:
            raise ConfigError(f"unknown target {name!r}; configured: {', '.join(ctl.targets)}")
        if not isinstance(ref, str) or not isinstance(tunables, dict):
            raise ConfigError(
                "apply needs policy (an artifact_id or verified policy name) and "
                "optional tunables {name: int}"
            )
        art = services.verified_artifact(ref, tunables)
        with self._busy_lock("apply"):
            ts = ctl.targets[name]
            if ts.target is None:
                raise ConfigError(f"target {name} is not running now; nothing applied")
            if ts.active is not None:
                ctl.release(ts, f"replaced by {actor}")
            self._apply_measured(ts, art.spec, art.tunables, f"forced by {actor}")
            return self.status()

    def _apply_measured(
        self, ts: TargetState, policy: str, tunables: dict[str, int], why: str
    ) -> None:
        """Profile the target, measure EEVDF on the guard's metric, then apply."""
        assert ts.target is not None
        ctl = self.ctl
        prof = services.profile_workload(ts.target, ctl.cfg.budgets.observe_s, ts.cfg.slo)
        ts.profile = prof
        meter = measure.guard_meter(ts.target, prof.slo, ts.cfg.latency_log)
        baseline = guard.measure_baseline(ctl, ts, meter, "none: applied by an operator")
        if baseline is not None:
            ctl.apply(ts, policy, tunables, meter, baseline, why)

    def rollback_now(self, actor: str) -> dict[str, Any]:
        """Release every active policy now (back to EEVDF); hysteresis counts from here.

        That is the daemon's own targets' and also what it holds for its clients
        (``load_policy`` asked through the socket): whatever this process holds."""
        ctl = self.ctl
        held = engine.release_in_process(actor)  # clients' loads end on their own threads
        with self._busy_lock("rollback"):
            released = list(held)
            for ts in ctl.targets.values():
                if ts.active is not None:
                    released.append(ts.active.name)
                    ctl.release(ts, f"rollback requested by {actor}")
                    ts.last_switch = time.time()
                    ctl.save(ts)
        if held:
            host.wait_until_disabled(10.0)
        return {"released": released, "sched_ext": host.sched_ext_state().state}
