"""The guard: is the policy attached to a target still better than EEVDF?

While a policy is active, each check (every ``guard.check_interval_s``) looks at

1. the engine's kernel watch (an ejection or stall rolls back at once);
2. one window of the target's SLO metric against EEVDF's baseline on that same metric:
   ``regression_windows`` regressions in a row roll back;
3. the target's phase, against its own behaviour in the first window under this policy:
   a material change in two checks in a row rolls back and re-tunes;
4. every third check, starvation of any thread on the system (the scan lives on the
   execution side, in :mod:`schedagent.kernel.starvation`).

One metric per guarded decision (issue 13): the guard watches the metric tune judged the
winner by, against tune's own EEVDF windows (with the observer, the p99 wakeup latency
costs the guard a map read, as it costs tune); when the guard's metric is another (tune's
p99 came from the bcc probe, or the observer is not running), it measures its own EEVDF
baseline on that metric before attaching (:func:`guard_baseline`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import Any, Literal, TypeAlias

from schedagent.daemon.control import Control
from schedagent.daemon.state import Baseline, TargetState
from schedagent.errors import TargetGone
from schedagent.execution import host, measure
from schedagent.models import Sample
from schedagent.profile.classify import material_change

#: What a guard check asks the loop to do next: re-tune for a new phase, or nothing.
Retune: TypeAlias = Literal["phase-change"] | None

#: the system-wide starvation scan runs on every this-many-th check (it costs a window)
STARVATION_EVERY = 3


def regressed(
    value: float, baseline: float, ratio: float, direction: Literal["lower", "higher"]
) -> bool:
    """Whether one window's value is ``ratio`` times worse than EEVDF's baseline."""
    return value > baseline * ratio if direction == "lower" else value < baseline / ratio


def check(ctl: Control, ts: TargetState) -> Retune:
    """One guard check of the target's active policy (see the module's docstring).

    Rolls back through ``ctl`` when the policy misbehaves. Returns ``"phase-change"``
    when the target's phase changed (the policy is then released and the backoff
    cleared): the caller re-tunes. Raises ``TargetGone`` when the target exited.
    """
    active = ts.active
    assert active is not None and ts.target is not None
    problem = active.session.problem()
    if problem is not None:
        ctl.rollback(ts, f"kernel: {problem}", {"guard_event": problem}, time.monotonic())
        return None
    sample = active.meter.measure(ctl.cfg.guard.window_s)
    detected = time.monotonic()
    if sample.target_exited:
        raise TargetGone(ts.target.pid or 0)
    evidence = {
        "metric": active.meter.metric.name,
        "value": sample.value,
        "baseline": active.baseline,
        "ratio_limit": ctl.cfg.guard.regression_ratio,
    }
    if _slo_regressed(ctl, ts, sample, evidence, detected):
        return None
    if _phase_changed(ctl, ts, sample, evidence, detected):
        return "phase-change"
    ts.checks += 1
    if ts.checks % STARVATION_EVERY == 0:
        _starvation(ctl, ts)
    return None


def _slo_regressed(
    ctl: Control, ts: TargetState, sample: Sample, evidence: dict[str, Any], detected: float
) -> bool:
    """Count this window; roll back (True) after enough regressions in a row."""
    active, g = ts.active, ctl.cfg.guard
    assert active is not None
    metric = active.meter.metric
    if sample.invalid is not None:
        # neither a regression nor a clean window: reported, and the count stands
        ctl.audit("guard-window-invalid", ts, {**evidence, "invalid": sample.invalid})
    else:
        active.last_value = sample.value
        worse = regressed(sample.value, active.baseline, g.regression_ratio, metric.direction)
        ts.regressions = ts.regressions + 1 if worse else 0
    if ts.regressions < g.regression_windows:
        return False
    ctl.rollback(
        ts,
        f"SLO regression: {metric.name} {sample.value:.4g} vs "
        f"EEVDF {active.baseline:.4g} in {ts.regressions} windows",
        evidence,
        detected,
    )
    return True


def _phase_changed(
    ctl: Control, ts: TargetState, sample: Sample, evidence: dict[str, Any], detected: float
) -> bool:
    """Judge the target's behaviour against its first window under this policy; on a
    material change in two checks in a row, roll back and clear the backoff (True)."""
    active = ts.active
    assert active is not None
    if ts.profile is None:
        return False
    if active.reference is None:
        active.reference = sample.features
        return False
    change = material_change(replace(ts.profile, features=active.reference), sample.features)
    ts.phase_votes = ts.phase_votes + 1 if change is not None else 0
    if change is None or ts.phase_votes < 2:
        return False
    ts.phase_votes = 0
    ctl.rollback(ts, f"phase change: {change.reason}", evidence, detected)
    ts.backoff_until = 0.0  # a new phase is a new workload: re-tune it
    ctl.save(ts)
    return True


def _starvation(ctl: Control, ts: TargetState) -> None:
    """Roll back when some thread on the system waited too long for its niceness."""
    g = ctl.cfg.guard
    worst_ms, tid, allowed_ms = host.starvation_scan(g.window_s, g.max_runnable_wait_ms)
    if worst_ms > allowed_ms:
        ctl.rollback(
            ts,
            f"starvation: thread {tid} waited {worst_ms:.0f} ms per "
            f"timeslice (allowed {allowed_ms:.0f} ms at its niceness)",
            {"max_runnable_wait_ms": worst_ms, "allowed_ms": allowed_ms, "tid": tid},
            time.monotonic(),
        )


def guard_baseline(
    ctl: Control,
    ts: TargetState,
    meter: measure.GuardMeter,
    tune_metric: str,
    tune_samples: list[float],
) -> Baseline | None:
    """EEVDF's level on the guard's metric: tune's own windows when tune measured that
    metric, else measured now (still on EEVDF) the way the guard will measure."""
    if meter.metric.name == tune_metric and tune_samples:
        return Baseline(
            statistics.median(tune_samples),
            tune_metric,
            f"median of tune's {len(tune_samples)} EEVDF windows",
            tune_metric,
        )
    return measure_baseline(ctl, ts, meter, tune_metric)


def measure_baseline(
    ctl: Control, ts: TargetState, meter: measure.GuardMeter, decided_on: str
) -> Baseline | None:
    """EEVDF's median on the guard's own metric, from ``rounds`` windows measured now
    (invalid windows left out); None, audited, when no window was valid."""
    assert ts.target is not None
    samples: list[float] = []
    invalid: list[str] = []
    for _ in range(ctl.cfg.budgets.rounds):
        sample = meter.measure(ctl.cfg.budgets.window_s)
        if sample.target_exited:
            raise TargetGone(ts.target.pid or 0)
        if sample.invalid is None:
            samples.append(sample.value)
        else:
            invalid.append(sample.invalid)
    if not samples:
        ctl.audit(
            "apply-failed",
            ts,
            {
                "error": f"no valid EEVDF window for the guard's baseline on {meter.metric.name}",
                "invalid": invalid,
            },
        )
        return None
    return Baseline(
        statistics.median(samples),
        meter.metric.name,
        f"median of {len(samples)} EEVDF windows measured by the guard "
        f"before attaching ({len(invalid)} invalid)",
        decided_on,
    )
