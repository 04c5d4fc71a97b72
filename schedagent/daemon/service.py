"""``schedagent daemon``: keep configured targets tuned, guarded, and audited.

For each configured target the daemon

1. finds it (unit, cgroup or command pattern; patterns never decide a class);
2. on a trigger (a new target, a phase change, a persistent SLO violation) profiles
   it and, by mode, reports (``observe``), plans and waits for ``schedagent approve``
   (``propose``), or tunes and applies a proven winner (``auto``);
3. while a policy is active, guards it: the engine's kernel watch, the target's SLO
   metric against the EEVDF baseline, its phase, and starvation of any task on the
   system. A regression rolls back to EEVDF, with backoff, and quarantine after
   repeated rollbacks. One metric per guarded decision (issue 13): the guard watches
   the metric tune judged the winner by, against tune's own EEVDF windows; when the
   guard's cheap metric is another (tune's p99 came from the bcc probe), it measures
   its own EEVDF baseline on that metric before attaching. The apply record names both;
4. records every decision in the audit trail: trigger, profile, SLO, evidence, the
   change, outcome and rationale.

Its state (applied decisions, backoff, rollback counts, proposals) lives in the store,
so a restarted daemon carries on. SIGTERM returns the system to EEVDF before exit;
SIGKILL closes the link fd, and the kernel does the same.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from schedagent import ops, services
from schedagent.execution import engine
from schedagent.execution import measure as live
from schedagent.agent.tune import TuneRequest
from schedagent.daemon import matcher, sdnotify
from schedagent.daemon.config import DaemonConfig, TargetConfig
from schedagent.daemon.socketapi import ApiServer
from schedagent.errors import ConfigError, SchedagentError, TargetGone
from schedagent.kernel import partial, procstat, scx, toolchain
from schedagent.policy import repo
from schedagent.profile.classify import material_change
from schedagent.models import Features, Target, WorkloadProfile, parse_slo
from schedagent.store import Store

log = logging.getLogger(__name__)


class DaemonBusy(SchedagentError):
    """An API request waited too long for the daemon's loop."""


class _Stop(BaseException):
    """SIGTERM/SIGINT: unwind whatever runs (detaching on the way) and exit."""


@dataclass(frozen=True, slots=True)
class _Baseline:
    """EEVDF's level on the guard's metric, and where it came from."""

    value: float
    metric: str
    source: str
    #: the metric the decision being guarded was made on
    decided_on: str | None = None


@dataclass(slots=True)
class _Active:
    policy: str              # what the engine resolves: a name or a staged source path
    name: str                # the scheduler's ops name, as the kernel shows it
    tunables: dict[str, int]
    #: the guard's meter: its metric is the one ``baseline`` was measured on under EEVDF
    meter: live.GuardMeter
    baseline: float
    stack: contextlib.ExitStack
    session: engine.Session
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
    phase: str = "waiting"   # waiting, observed, proposed, eevdf, active
    profile: WorkloadProfile | None = None
    active: _Active | None = None
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
        return {"last_switch": self.last_switch, "backoff_until": self.backoff_until,
                "rollbacks": self.rollbacks, "applied": self.applied}


def _age_s(target: Target) -> float:
    """How long a pid target has existed (a cgroup counts as settled)."""
    if target.pid is None:
        return float("inf")
    try:
        return time.time() - psutil.Process(target.pid).create_time()
    except psutil.Error:
        return 0.0


def starvation_scan(window_s: float, limit_ms: float) -> tuple[float, int | None, float]:
    """The thread that waited longest per timeslice over a window, for its niceness.

    Returns its mean runnable wait per timeslice (ms), its tid, and the wait it is
    allowed: ``limit_ms`` for nice 0 and higher priorities, more for a nicer thread, whose
    fair share is smaller under any fair scheduler (EEVDF gives a nice-19 thread 1/68 of
    a nice-0 one), capped at 4x. A thread that stayed runnable without running at all
    counts its whole wait.
    """
    def snap() -> dict[int, tuple[int, int]]:
        out = {}
        for task in Path("/proc").glob("[0-9]*/task/[0-9]*/schedstat"):
            with contextlib.suppress(OSError, ValueError):
                _run, wait, slices = (int(x) for x in task.read_text().split()[:3])
                out[int(task.parent.name)] = (wait, slices)
        return out
    first = snap()
    time.sleep(window_s)
    worst = (0.0, None, limit_ms)
    for tid, (wait, slices) in snap().items():
        if tid not in first:
            continue
        d_wait, d_slices = wait - first[tid][0], slices - first[tid][1]
        mean_ms = d_wait / max(d_slices, 1) / 1e6
        if mean_ms <= limit_ms:
            continue  # only the few over the plain limit have their niceness read
        allowed = allowed_wait_ms(limit_ms, _nice(tid))
        if mean_ms / allowed > worst[0] / worst[2]:
            worst = (mean_ms, tid, allowed)
    return worst


def allowed_wait_ms(limit_ms: float, nice: int) -> float:
    """The wait per timeslice a thread of this niceness may see before it counts as
    starved: each nice level is about 1.25x less CPU share; at most 4x the limit."""
    return limit_ms * min(4.0, max(1.0, 1.25 ** nice))


def _nice(tid: int) -> int:
    fields = procstat.stat_fields(f"/proc/{tid}/stat")  # /proc/TID works for any thread
    try:
        return int(fields[16]) if fields else 0
    except (ValueError, IndexError):
        return 0


class Daemon:
    """The daemon's state and loop. ``run()`` blocks until SIGTERM or ``stop()``."""

    def __init__(self, cfg: DaemonConfig, store: Store | None = None) -> None:
        self.cfg = cfg
        self.store = store or services.open_store()
        self.targets = {t.name: TargetState(t) for t in cfg.targets}
        self.lock = threading.RLock()
        self.rollbacks_total = 0
        self.heartbeat = time.monotonic()
        self.started = time.time()
        self._stop = threading.Event()
        self._foreign: str | None = None
        self._api: ApiServer | None = None
        self._metrics: http.server.ThreadingHTTPServer | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def run(self) -> None:
        note = engine.recover(self.store)
        if note:
            self._audit("recover", None, {"note": note})
        self._load_state()
        self._api = ApiServer(self.cfg.socket, self.cfg.socket_group, self.handle)
        self._api.start()
        if self.cfg.prometheus_port:
            self._start_metrics(self.cfg.prometheus_port)
        self._start_watchdog()
        self._start_prebuild()
        self._audit("start", None, {"mode": self.cfg.mode, "targets": list(self.targets),
                                    "pid": os.getpid()})
        sdnotify.notify(f"READY=1\nSTATUS=watching {len(self.targets)} target(s), mode "
                        f"{self.cfg.mode}")
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                for ts in list(self.targets.values()):
                    self._step(ts)
                self._stop.wait(self.cfg.poll_interval_s)
        except _Stop:
            pass
        finally:
            self._stop.set()  # the watchdog thread
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sdnotify.notify("STOPPING=1")
            self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _start_prebuild(self) -> None:
        """Prepare vmlinux.h and the built-in policies for this kernel in the background.

        Objects are keyed by the kernel build id, so after a kernel update the first start
        compiles them again; the next tune then waits on no compile (issue 14).
        """
        if not engine.has_sched_ext():
            return

        def work() -> None:
            try:
                report = services.prebuild()
            except Exception:  # noqa: BLE001  (a background thread: log, never kill the daemon)
                log.exception("preparing the built-in policies failed")
                return
            log.info("prebuild for kernel %s: %d objects, %d failed", report.build_id[:12],
                     len(report.objects), len(report.failed))
            with self.lock:
                self._audit("prebuild", None, {"build_id": report.build_id,
                                               "objects": report.objects,
                                               "failed": report.failed})

        threading.Thread(target=work, name="prebuild", daemon=True).start()

    def _on_signal(self, signum: int, _frame: object) -> None:
        # No locks here (an Event.set() could deadlock against the interrupted code): the
        # exception unwinds whatever runs, and every context manager on the way detaches.
        raise _Stop(signal.Signals(signum).name)

    def _shutdown(self) -> None:
        # SIGTERM must detach every target even when the store is broken (read-only disk,
        # corrupted file): the engine's teardown detaches before it records, so a failure
        # here is logged and the next target is still released (issue 12)
        with self.lock:
            for ts in self.targets.values():
                if ts.active is not None:
                    try:
                        self._release(ts, "daemon stopping", keep_applied=True)
                    except Exception:
                        log.exception("releasing %s at stop failed after its detach",
                                      ts.cfg.name)
                        ts.active = None
        try:
            self._audit("stop", None, {"state_after": scx.read_state().state})
        except Exception:
            log.exception("the stop record was not written (the store failed)")
        if self._api is not None:
            self._api.stop()
        if self._metrics is not None:
            self._metrics.shutdown()
        self.store.close()

    def _start_watchdog(self) -> None:
        interval = sdnotify.watchdog_interval_s()
        if interval is None:
            return
        # a tune can run for minutes: the loop's heartbeat is refreshed by its progress,
        # and a loop silent for longer than the tune budget is hung; stop pinging then
        stale_s = self.cfg.budgets.budget_s + 300

        def ping() -> None:
            while not self._stop.wait(interval):
                if time.monotonic() - self.heartbeat < stale_s:
                    sdnotify.notify("WATCHDOG=1")

        threading.Thread(target=ping, name="watchdog", daemon=True).start()

    # --- persistence ----------------------------------------------------------------------

    def _load_state(self) -> None:
        for ts in self.targets.values():
            saved = self.store.kv_get(f"target:{ts.cfg.name}")
            if isinstance(saved, dict):
                ts.last_switch = float(saved.get("last_switch", 0.0))
                ts.backoff_until = float(saved.get("backoff_until", 0.0))
                ts.rollbacks = dict(saved.get("rollbacks") or {})
                ts.applied = saved.get("applied")
        pending = self.store.proposals("pending")
        for prop in pending:
            ts = self.targets.get(str(prop["target"]))
            if ts is not None:
                ts.phase = "proposed"

    def _save(self, ts: TargetState) -> None:
        self.store.kv_set(f"target:{ts.cfg.name}", ts.persisted())

    def _audit(self, action: str, ts: TargetState | None, detail: dict[str, Any]) -> None:
        args = {"target": ts.cfg.name if ts else None,
                "selected": ts.target.describe() if ts and ts.target else None}
        self.store.audit("daemon", action, args, ops.bounded(detail))
        log.info("%s %s: %s", action, args["target"] or "-", detail)

    # --- the loop -------------------------------------------------------------------------

    def _step(self, ts: TargetState) -> None:
        try:
            found = matcher.find(ts.cfg.match)
            with self.lock:
                if found is None:
                    if ts.active is not None:
                        self._release(ts, "target gone")
                    if ts.target is not None:
                        self._audit("target-gone", ts, {})
                    ts.target, ts.phase, ts.profile = None, "waiting", None
                    return
                if self._foreign_scheduler(ts):
                    return
                if found != ts.target and _age_s(found) < self.cfg.settle_s:
                    return  # let it reach its steady state first
                if found != ts.target:
                    if ts.active is not None:
                        self._release(ts, "target replaced")
                    ts.target, ts.profile = found, None
                    self._trigger(ts, "new-target")
                    return
                if ts.active is not None:
                    self._guard(ts)
                elif ts.phase in ("observed", "eevdf"):
                    self._watch_eevdf(ts)
        except TargetGone:
            with self.lock:
                if ts.active is not None:
                    self._release(ts, "target exited")
                ts.target, ts.phase = None, "waiting"
        except SchedagentError as err:
            self._audit("error", ts, {"error": str(err)})

    def _foreign_scheduler(self, ts: TargetState) -> bool:
        """Someone else's sched_ext scheduler is attached: step aside, and say so once."""
        if ts.active is not None or self.cfg.mode == "observe":
            return False
        snap = scx.read_state()
        if snap.state == "disabled" or any(t.active for t in self.targets.values()):
            self._foreign = None
            return False
        if self._foreign != snap.ops:
            self._foreign = snap.ops
            self._audit("step-aside", ts, {"outcome": f"{snap.ops} ({snap.state}) is attached "
                                           "and not ours; nothing is tuned until it goes",
                                           "rationale": "one sched_ext scheduler at a time; "
                                           "the administrator's choice wins"})
        return True

    def _request(self, ts: TargetState, dry_run: bool) -> TuneRequest:
        b = self.cfg.budgets
        assert ts.target is not None
        return TuneRequest(ts.target, agent=self.cfg.agent, budget=b, dry_run=dry_run,
                           latency_log=ts.cfg.latency_log)

    def _progress(self, what: str, done: int, total: int) -> None:
        self.heartbeat = time.monotonic()
        sdnotify.notify(f"STATUS={what} ({done}/{total})")

    def _trigger(self, ts: TargetState, why: str) -> None:
        """Profile, then report, propose or tune, by mode."""
        assert ts.target is not None
        # recovery, not a new switch: what was active when the daemon stopped or died
        if ts.applied and why == "new-target" and self.cfg.mode == "auto" and \
                self._restore_applied(ts):
            return
        now = time.time()
        if now < ts.backoff_until:
            self._audit("skip", ts, {"trigger": why, "rationale": "in backoff after a "
                                     f"rollback for {ts.backoff_until - now:.0f} s more"})
            ts.phase, ts.violations = "eevdf", 0
            return
        if why != "new-target" and now - ts.last_switch < self.cfg.min_switch_interval_s:
            ts.phase = "eevdf"
            return  # hysteresis: too soon after the last decision; checked again later
        ts.violations = 0
        if self.cfg.mode == "observe":
            prof = services.profile_workload(ts.target, self.cfg.budgets.observe_s, ts.cfg.slo)
            ts.profile, ts.phase = prof, "observed"
            self._audit("observe", ts, {"trigger": why, "profile": prof.to_json(),
                                        "outcome": f"{prof.workload_class}, SLO "
                                                   f"{prof.slo.describe()}",
                                        "slo": prof.slo.describe(),
                                        "rationale": "observe mode: profile and report only"})
            return
        dry = self.cfg.mode == "propose"
        report = services.tune(self._request(ts, dry), ts.cfg.slo, self._progress)
        # a tune is a decision even when EEVDF stays: the hysteresis counts from it
        ts.last_switch = time.time()
        self._save(ts)
        ts.profile = WorkloadProfile.from_json(report.profile)
        decision = report.decision
        assert decision is not None
        evidence = {"trigger": why, "profile": report.profile, "slo": report.slo,
                    "trials": [asdict(t) for t in report.trials], "ended": report.ended,
                    "decision": asdict(decision), "rationale": decision.why}
        if dry:
            best = next((t for t in report.trials if t.status != "rejected"), None)
            if best is None:
                ts.phase = "eevdf"
                self._audit("propose", ts, {**evidence, "outcome": "nothing passed the gates"})
                return
            pid = self.store.add_proposal(ts.cfg.name, best.policy, best.overrides, evidence)
            ts.phase = "proposed"
            self._audit("propose", ts, {**evidence, "proposal": pid, "diff":
                                        f"eevdf -> {best.label}",
                                        "outcome": f"waiting: schedagent approve {pid}"})
            return
        self._audit("tune", ts, {**evidence, "outcome": decision.policy})
        ts.phase = "eevdf"
        if decision.policy != "eevdf":
            meter = live.guard_meter(ts.target, ts.profile.slo, ts.cfg.latency_log)
            baseline = self._guard_baseline(ts, meter, str(report.metric.get("name")),
                                            report.baseline_samples)
            if baseline is not None:
                self._apply(ts, decision.policy, decision.tunables, meter, baseline, why)

    def _guard_baseline(self, ts: TargetState, meter: live.GuardMeter, tune_metric: str,
                        tune_samples: list[float]) -> _Baseline | None:
        """EEVDF's level on the guard's metric: tune's own windows when tune measured that
        metric, else measured now (still on EEVDF) the way the guard will measure."""
        if meter.metric.name == tune_metric and tune_samples:
            return _Baseline(statistics.median(tune_samples), tune_metric,
                             f"median of tune's {len(tune_samples)} EEVDF windows", tune_metric)
        return self._measure_baseline(ts, meter, tune_metric)

    def _restore_applied(self, ts: TargetState) -> bool:
        """After a restart: apply the decision that was active before, without re-tuning."""
        saved = ts.applied or {}
        try:
            prof = services.profile_workload(ts.target, self.cfg.budgets.observe_s,  # type: ignore[arg-type]
                                             ts.cfg.slo)
            ts.profile = prof
            meter = live.guard_meter(ts.target, prof.slo, ts.cfg.latency_log)  # type: ignore[arg-type]
            if saved.get("metric") == meter.metric.name:
                baseline: _Baseline | None = _Baseline(
                    float(saved["baseline"]), meter.metric.name, "saved before the restart",
                    meter.metric.name)
            else:  # saved on another metric (or by an older daemon): measure it again
                baseline = self._measure_baseline(ts, meter, str(saved.get("metric")))
            if baseline is None:
                return False
            self._apply(ts, str(saved["policy"]), dict(saved["tunables"]), meter, baseline,
                        "restart")
            return ts.active is not None
        except (SchedagentError, KeyError, ValueError) as err:
            self._audit("restore-failed", ts, {"error": str(err), "saved": saved})
            ts.applied = None
            self._save(ts)
            return False

    def _apply(self, ts: TargetState, policy: str, tunables: dict[str, int],
               meter: live.GuardMeter, base: _Baseline, why: str) -> None:
        assert ts.target is not None
        stack = contextlib.ExitStack()
        req = engine.RunRequest(policy, tunables, ts.target, switch_all=True, actor="daemon")
        try:
            sess = stack.enter_context(engine.session(req, self.store))
        except SchedagentError as err:
            stack.close()
            self._audit("apply-failed", ts, {"trigger": why, "policy": policy,
                                             "error": str(err)})
            return
        ts.active = _Active(policy, sess.outcome.ops_name, tunables, meter, base.value, stack,
                            sess, time.time())
        ts.phase, ts.regressions, ts.last_switch = "active", 0, time.time()
        ts.applied = {"policy": policy, "tunables": tunables, "baseline": base.value,
                      "metric": meter.metric.name}
        self._save(ts)
        self._audit("apply", ts, {"trigger": why,
                                  "diff": f"eevdf -> {ts.active.name} {tunables}",
                                  "evidence": {"baseline": base.value,
                                               "guard_metric": meter.metric.name,
                                               "baseline_metric": base.metric,
                                               "decided_on": base.decided_on,
                                               "baseline_source": base.source},
                                  "outcome": f"{scx.read_state().ops} enabled, guard on"})

    def _release(self, ts: TargetState, why: str, keep_applied: bool = False) -> float:
        """Detach the target's policy; return how long the detach took (s)."""
        active = ts.active
        assert active is not None
        t0 = time.monotonic()
        active.stack.close()
        took = time.monotonic() - t0
        ts.active, ts.phase = None, "eevdf"
        if not keep_applied:
            ts.applied = None
        self._save(ts)
        self._audit("release", ts, {"trigger": why, "diff": f"{active.name} -> eevdf",
                                    "outcome": f"sched_ext {scx.read_state().state}",
                                    "detach_s": round(took, 3)})
        return took

    def _rollback(self, ts: TargetState, why: str, evidence: dict[str, Any],
                  detected: float) -> None:
        active = ts.active
        assert active is not None
        self._release(ts, f"rollback: {why}")
        took_ms = (time.monotonic() - detected) * 1000
        self.rollbacks_total += 1
        n = ts.rollbacks.get(active.name, 0) + 1
        ts.rollbacks[active.name] = n
        g = self.cfg.guard
        backoff = min(g.backoff_s * 2 ** (n - 1), g.backoff_max_s)
        ts.backoff_until = time.time() + backoff
        quarantined = False
        if n >= g.quarantine_after:
            src = repo.resolve(active.policy)
            self.store.quarantine(src.name, src.source_hash(), toolchain.kernel_build_id(),
                                  f"daemon: {n} rollbacks of {active.name}, last: {why}")
            quarantined = True
        self._save(ts)
        self._audit("rollback", ts, {"trigger": why, "evidence": evidence,
                                     "diff": f"{active.name} -> eevdf",
                                     "outcome": f"sched_ext {scx.read_state().state}",
                                     "detect_to_eevdf_ms": round(took_ms, 1),
                                     "backoff_s": backoff, "quarantined": quarantined,
                                     "rationale": f"rollback #{n} of {active.name}"})

    def _guard(self, ts: TargetState) -> None:
        """One guard check of the active policy."""
        active = ts.active
        assert active is not None and ts.target is not None
        problem = active.session.problem()
        if problem is not None:
            self._rollback(ts, f"kernel: {problem}", {"guard_event": problem}, time.monotonic())
            return
        g = self.cfg.guard
        metric = active.meter.metric
        sample = active.meter.measure(g.window_s)
        detected = time.monotonic()
        if sample.target_exited:
            raise TargetGone(ts.target.pid or 0)
        evidence = {"metric": metric.name, "value": sample.value,
                    "baseline": active.baseline, "ratio_limit": g.regression_ratio}
        if sample.invalid is not None:
            # neither a regression nor a clean window: reported, and the count stands
            self._audit("guard-window-invalid", ts, {**evidence, "invalid": sample.invalid})
        else:
            active.last_value = sample.value
            worse = (sample.value > active.baseline * g.regression_ratio
                     if metric.direction == "lower"
                     else sample.value < active.baseline / g.regression_ratio)
            ts.regressions = ts.regressions + 1 if worse else 0
        if ts.regressions >= g.regression_windows:
            self._rollback(ts, f"SLO regression: {metric.name} {sample.value:.4g} vs "
                           f"EEVDF {active.baseline:.4g} in {ts.regressions} windows",
                           evidence, detected)
            return
        if ts.profile is not None and active.reference is None:
            active.reference = sample.features
        elif ts.profile is not None and active.reference is not None:
            change = material_change(replace(ts.profile, features=active.reference),
                                     sample.features)
            ts.phase_votes = ts.phase_votes + 1 if change is not None else 0
            if change is not None and ts.phase_votes >= 2:
                ts.phase_votes = 0
                self._rollback(ts, f"phase change: {change.reason}", evidence, detected)
                ts.backoff_until = 0.0  # a new phase is a new workload: re-tune it
                self._save(ts)
                self._trigger(ts, "phase-change")
                return
        ts.checks += 1
        if ts.checks % 3 == 0:
            worst_ms, tid, allowed_ms = starvation_scan(g.window_s, g.max_runnable_wait_ms)
            if worst_ms > allowed_ms:
                self._rollback(ts, f"starvation: thread {tid} waited {worst_ms:.0f} ms per "
                               f"timeslice (allowed {allowed_ms:.0f} ms at its niceness)",
                               {"max_runnable_wait_ms": worst_ms, "allowed_ms": allowed_ms,
                                "tid": tid}, time.monotonic())

    def _watch_eevdf(self, ts: TargetState) -> None:
        """Under EEVDF: a phase change or a persistent SLO violation re-tunes."""
        if self.cfg.mode == "observe" and ts.profile is None:
            return
        assert ts.target is not None
        prof = services.profile_workload(ts.target, self.cfg.guard.window_s, ts.cfg.slo)
        # a material change (CPU use, wakeup rate) in two checks in a row
        change = material_change(ts.profile, prof.features) if ts.profile is not None else None
        ts.phase_votes = ts.phase_votes + 1 if change is not None else 0
        if ts.phase_votes >= 2:
            ts.phase_votes = 0
            self._trigger(ts, "phase-change")
            return
        slo = prof.slo
        if slo.target is not None and slo.metric == "p99_wakeup_latency":
            # the cheap proxy: mean wait per slice above the SLO's target is a violation
            ts.violations = ts.violations + 1 if prof.features.avg_wait_us > slo.target else 0
            if ts.violations >= self.cfg.violation_checks and self.cfg.mode != "observe":
                self._trigger(ts, "slo-violation")

    # --- the socket API -------------------------------------------------------------------

    def handle(self, op: str, args: dict[str, Any], actor: str) -> dict[str, Any]:
        """One socket request: the daemon's own operations, or a shared one from ops."""
        if op == "daemon_status":
            return self.status()
        if op == "approve":
            return self.approve(args.get("id"), actor)
        if op == "apply":
            return self.force_apply(args, actor)
        if op == "rollback":
            return self.rollback_now(actor)
        if op == "proposals":
            store = services.open_store()
            try:
                return {"proposals": store.proposals(args.get("status"))}
            finally:
                store.close()
        return ops.call(op, args, actor)

    def _quarantine_size(self) -> int:
        store = services.open_store()  # the API's threads keep off the loop's connection
        try:
            return len(store.quarantine_list())
        finally:
            store.close()

    def status(self) -> dict[str, Any]:
        """A snapshot, without the loop's lock: a tune holds that for minutes."""
        return ops.bounded({
            "pid": os.getpid(), "mode": self.cfg.mode, "uptime_s": time.time() - self.started,
            "sched_ext": asdict(scx.read_state()), "rollbacks_total": self.rollbacks_total,
            "quarantine": self._quarantine_size(),
            "targets": {name: _view(ts)
                        for name, ts in self.targets.items()}})

    def _measure_baseline(self, ts: TargetState, meter: live.GuardMeter,
                          decided_on: str) -> _Baseline | None:
        """EEVDF's median on the guard's own metric, from ``rounds`` windows measured now
        (invalid windows left out); None, audited, when no window was valid."""
        assert ts.target is not None
        samples, invalid = [], []
        for _ in range(self.cfg.budgets.rounds):
            sample = meter.measure(self.cfg.budgets.window_s)
            if sample.target_exited:
                raise TargetGone(ts.target.pid or 0)
            (samples.append(sample.value) if sample.invalid is None
             else invalid.append(sample.invalid))
        if not samples:
            self._audit("apply-failed", ts, {"error": "no valid EEVDF window for the guard's "
                                             f"baseline on {meter.metric.name}",
                                             "invalid": invalid})
            return None
        return _Baseline(statistics.median(samples), meter.metric.name,
                         f"median of {len(samples)} EEVDF windows measured by the guard "
                         f"before attaching ({len(invalid)} invalid)", decided_on)

    @contextlib.contextmanager
    def _busy_lock(self, what: str, timeout_s: float = 300.0) -> Iterator[None]:
        """The loop's lock for an API request; a clear error when a tune keeps it."""
        if not self.lock.acquire(timeout=timeout_s):
            raise DaemonBusy(f"{what}: the daemon has been busy (tuning) for {timeout_s:.0f} s; "
                             "try again when `schedagent status` shows it idle")
        try:
            yield
        finally:
            self.lock.release()

    def approve(self, proposal_id: object, actor: str) -> dict[str, Any]:
        if not isinstance(proposal_id, int) or isinstance(proposal_id, bool):
            raise ConfigError(f"approve needs an integer proposal id, got {proposal_id!r}; see "
                              "`schedagent history` for pending proposals")
        with self._busy_lock("approve"):
            prop = next((p for p in self.store.proposals() if p["id"] == proposal_id), None)
            if prop is None or prop["status"] != "pending":
                pending = [p["id"] for p in self.store.proposals("pending")]
                raise ConfigError(f"no pending proposal {proposal_id}; pending: {pending or 'none'}")
            ts = self.targets.get(str(prop["target"]))
            if ts is None or ts.target is None:
                raise ConfigError(f"the target of proposal {proposal_id} ({prop['target']}) is "
                                  "not running now; nothing applied")
            self.store.set_proposal_status(proposal_id, "approved")
            self._apply_measured(ts, str(prop["policy"]), dict(prop["tunables"]),
                                 f"approved by {actor}")
            return self.status()

    def force_apply(self, args: dict[str, Any], actor: str) -> dict[str, Any]:
        """Apply a verified artifact to a configured target under the guard (operator use)."""
        name, ref = args.get("target"), args.get("policy")
        tunables = args.get("tunables") or {}
        if name not in self.targets:
            raise ConfigError(f"unknown target {name!r}; configured: {', '.join(self.targets)}")
        if not isinstance(ref, str) or not isinstance(tunables, dict):
            raise ConfigError("apply needs policy (an artifact_id or verified policy name) and "
                              "optional tunables {name: int}")
        art = services.verified_artifact(ref, tunables)
        with self._busy_lock("apply"):
            ts = self.targets[name]
            if ts.target is None:
                raise ConfigError(f"target {name} is not running now; nothing applied")
            if ts.active is not None:
                self._release(ts, f"replaced by {actor}")
            self._apply_measured(ts, art.spec, art.tunables, f"forced by {actor}")
            return self.status()

    def _apply_measured(self, ts: TargetState, policy: str, tunables: dict[str, int],
                        why: str) -> None:
        assert ts.target is not None
        prof = services.profile_workload(ts.target, self.cfg.budgets.observe_s, ts.cfg.slo)
        ts.profile = prof
        meter = live.guard_meter(ts.target, prof.slo, ts.cfg.latency_log)
        baseline = self._measure_baseline(ts, meter, "none: applied by an operator")
        if baseline is not None:
            self._apply(ts, policy, tunables, meter, baseline, why)

    def rollback_now(self, actor: str) -> dict[str, Any]:
        with self._busy_lock("rollback"):
            released = []
            for ts in self.targets.values():
                if ts.active is not None:
                    released.append(ts.active.name)
                    self._release(ts, f"rollback requested by {actor}")
                    ts.last_switch = time.time()
                    self._save(ts)
        return {"released": released, "sched_ext": scx.read_state().state}

    # --- metrics --------------------------------------------------------------------------

    def metrics_text(self) -> str:
        lines = ["# TYPE schedagent_active_policy gauge",
                 "# TYPE schedagent_slo_metric gauge",
                 "# TYPE schedagent_rollbacks_total counter",
                 "# TYPE schedagent_quarantine_size gauge"]
        # no lock: a snapshot is enough, and a tune holds the lock for minutes
        for name, ts in self.targets.items():
            view = _view(ts)
            lines.append(f'schedagent_active_policy{{target="{name}",'
                         f'policy="{view["policy"]}"}} 1')
            if view["last_value"] is not None:
                lines.append(f'schedagent_slo_metric{{target="{name}",'
                             f'metric="{view["metric"]}"}} {view["last_value"]}')
        lines.append(f"schedagent_rollbacks_total {self.rollbacks_total}")
        lines.append(f"schedagent_quarantine_size {self._quarantine_size()}")
        return "\n".join(lines) + "\n"

    def _start_metrics(self, port: int) -> None:
        daemon = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = daemon.metrics_text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self._metrics = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        threading.Thread(target=self._metrics.serve_forever, name="metrics",
                         daemon=True).start()


def _view(ts: TargetState) -> dict[str, Any]:
    """One target as the API shows it (read once: the loop may change it meanwhile)."""
    active, target = ts.active, ts.target
    return {"selected": target.describe() if target else None, "phase": ts.phase,
            "policy": active.name if active else "eevdf",
            "metric": active.meter.metric.name if active else None,
            "last_value": active.last_value if active else None,
            "baseline": active.baseline if active else None,
            "backoff_s": max(0.0, ts.backoff_until - time.time()),
            "rollbacks": dict(ts.rollbacks)}


def run(cfg: DaemonConfig) -> None:
    """``schedagent daemon``: needs root and sched_ext (observe mode needs neither)."""
    if cfg.mode != "observe":
        engine.require_sched_ext()
    with procstat.priority():
        Daemon(cfg).run()


__all__ = ["Daemon", "TargetState", "allowed_wait_ms", "parse_slo", "run", "starvation_scan"]
