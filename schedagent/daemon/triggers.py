"""When the daemon profiles, proposes or tunes a target, and what it does then.

A trigger is a new target (once it has settled), a phase change, or an SLO violation
that persists under EEVDF. Whether a trigger acts is decided here: a target in backoff
after a rollback is skipped, and hysteresis keeps a target from switching more often
than ``min_switch_interval_s``. A trigger that acts profiles the target and, by mode,
reports (``observe``), plans and waits for ``schedagent approve`` (``propose``), or
tunes and applies a proven winner under the guard (``auto``). After a restart in auto
mode, the decision that was active is applied again without a re-tune.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import psutil

from schedagent import services
from schedagent.agent.report import TuneReport
from schedagent.agent.tune import TuneRequest
from schedagent.daemon import guard
from schedagent.daemon.control import Control
from schedagent.daemon.state import Baseline, TargetState
from schedagent.errors import SchedagentError
from schedagent.execution import measure
from schedagent.models import Target, WorkloadProfile
from schedagent.profile.classify import material_change


def is_settled(target: Target, settle_s: float) -> bool:
    """Whether a newly found target is old enough to profile (start-up is no phase)."""
    return _age_s(target) >= settle_s


def _age_s(target: Target) -> float:
    """How long a pid target has existed (a cgroup counts as settled)."""
    if target.pid is None:
        return float("inf")
    try:
        return time.time() - psutil.Process(target.pid).create_time()
    except psutil.Error:
        return 0.0


def trigger(ctl: Control, ts: TargetState, why: str) -> None:
    """Profile, then report, propose or tune, by mode; unless backoff or hysteresis
    holds the target on EEVDF for now."""
    assert ts.target is not None
    # recovery, not a new switch: what was active when the daemon stopped or died
    if ts.applied and why == "new-target" and ctl.cfg.mode == "auto" and restore_applied(ctl, ts):
        return
    if not _may_act(ctl, ts, why):
        return
    ts.violations = 0
    if ctl.cfg.mode == "observe":
        _observe(ctl, ts, why)
    else:
        _tune(ctl, ts, why)


def _may_act(ctl: Control, ts: TargetState, why: str) -> bool:
    """Backoff after a rollback, then hysteresis; a held target waits on EEVDF."""
    now = time.time()
    if now < ts.backoff_until:
        ctl.audit(
            "skip",
            ts,
            {
                "trigger": why,
                "rationale": f"in backoff after a rollback for {ts.backoff_until - now:.0f} s more",
            },
        )
        ts.phase, ts.violations = "eevdf", 0
        return False
    if why != "new-target" and now - ts.last_switch < ctl.cfg.min_switch_interval_s:
        ts.phase = "eevdf"
        return False  # hysteresis: too soon after the last decision; checked again later
    return True


def _observe(ctl: Control, ts: TargetState, why: str) -> None:
    """Observe mode: profile the target and report it, nothing more."""
    assert ts.target is not None
    prof = services.profile_workload(ts.target, ctl.cfg.budgets.observe_s, ts.cfg.slo)
    ts.profile, ts.phase = prof, "observed"
    ctl.audit(
        "observe",
        ts,
        {
            "trigger": why,
            "profile": prof.to_json(),
            "outcome": f"{prof.workload_class}, SLO {prof.slo.describe()}",
            "slo": prof.slo.describe(),
            "rationale": "observe mode: profile and report only",
        },
    )


def tune_request(ctl: Control, ts: TargetState, dry_run: bool) -> TuneRequest:
    """The tune the daemon runs for a target, within its configured budget."""
    assert ts.target is not None
    return TuneRequest(
        ts.target,
        agent=ctl.cfg.agent,
        budget=ctl.cfg.budgets,
        dry_run=dry_run,
        latency_log=ts.cfg.latency_log,
    )


def _tune(ctl: Control, ts: TargetState, why: str) -> None:
    """Tune the target; propose the best candidate, or apply the winner under the guard."""
    assert ts.target is not None
    dry = ctl.cfg.mode == "propose"
    report = services.tune(tune_request(ctl, ts, dry), ts.cfg.slo, ctl.progress)
    # a tune is a decision even when EEVDF stays: the hysteresis counts from it
    ts.last_switch = time.time()
    ctl.save(ts)
    ts.profile = WorkloadProfile.from_json(report.profile)
    decision = report.decision
    assert decision is not None
    evidence: dict[str, object] = {
        "trigger": why,
        "profile": report.profile,
        "slo": report.slo,
        "trials": [asdict(t) for t in report.trials],
        "ended": report.ended,
        "decision": asdict(decision),
        "rationale": decision.why,
    }
    if dry:
        _propose(ctl, ts, report, evidence)
        return
    ctl.audit("tune", ts, {**evidence, "outcome": decision.policy})
    ts.phase = "eevdf"
    if decision.policy != "eevdf":
        meter = measure.guard_meter(ts.target, ts.profile.slo, ts.cfg.latency_log)
        baseline = guard.guard_baseline(
            ctl, ts, meter, str(report.metric.get("name")), report.baseline_samples
        )
        if baseline is not None:
            ctl.apply(ts, decision.policy, decision.tunables, meter, baseline, why)


def _propose(
    ctl: Control, ts: TargetState, report: TuneReport, evidence: dict[str, object]
) -> None:
    """Propose mode: store the best candidate that passed the gates for approval."""
    best = next((t for t in report.trials if t.status != "rejected"), None)
    if best is None:
        ts.phase = "eevdf"
        ctl.audit("propose", ts, {**evidence, "outcome": "nothing passed the gates"})
        return
    pid = ctl.store.add_proposal(ts.cfg.name, best.policy, best.overrides, evidence)
    ts.phase = "proposed"
    ctl.audit(
        "propose",
        ts,
        {
            **evidence,
            "proposal": pid,
            "diff": f"eevdf -> {best.label}",
            "outcome": f"waiting: schedagent approve {pid}",
        },
    )


def restore_applied(ctl: Control, ts: TargetState) -> bool:
    """After a restart: apply the decision that was active before, without re-tuning.

    Its saved baseline is used when it was measured on the guard's metric; otherwise
    EEVDF is measured again. False (audited, and the saved decision forgotten) when it
    could not be applied.
    """
    assert ts.target is not None
    saved = ts.applied or {}
    try:
        prof = services.profile_workload(ts.target, ctl.cfg.budgets.observe_s, ts.cfg.slo)
        ts.profile = prof
        meter = measure.guard_meter(ts.target, prof.slo, ts.cfg.latency_log)
        if saved.get("metric") == meter.metric.name:
            baseline: Baseline | None = Baseline(
                float(saved["baseline"]),
                meter.metric.name,
                "saved before the restart",
                meter.metric.name,
            )
        else:  # saved on another metric (or by an older daemon): measure it again
            baseline = guard.measure_baseline(ctl, ts, meter, str(saved.get("metric")))
        if baseline is None:
            return False
        ctl.apply(ts, str(saved["policy"]), dict(saved["tunables"]), meter, baseline, "restart")
        return ts.active is not None
    except (SchedagentError, KeyError, ValueError) as err:
        ctl.audit("restore-failed", ts, {"error": str(err), "saved": saved})
        ts.applied = None
        ctl.save(ts)
        return False


def watch_eevdf(ctl: Control, ts: TargetState) -> None:
    """Under EEVDF: a phase change or a persistent SLO violation re-tunes."""
    if ctl.cfg.mode == "observe" and ts.profile is None:
        return
    assert ts.target is not None
    prof = services.profile_workload(ts.target, ctl.cfg.guard.window_s, ts.cfg.slo)
    # a material change (CPU use, wakeup rate) in two checks in a row
    change = material_change(ts.profile, prof.features) if ts.profile is not None else None
    ts.phase_votes = ts.phase_votes + 1 if change is not None else 0
    if ts.phase_votes >= 2:
        ts.phase_votes = 0
        trigger(ctl, ts, "phase-change")
        return
    slo = prof.slo
    if slo.target is not None and slo.metric == "p99_wakeup_latency":
        # the cheap proxy: mean wait per slice above the SLO's target is a violation
        ts.violations = ts.violations + 1 if prof.features.avg_wait_us > slo.target else 0
        if ts.violations >= ctl.cfg.violation_checks and ctl.cfg.mode != "observe":
            trigger(ctl, ts, "slo-violation")
