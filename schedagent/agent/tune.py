"""The tuning loop: profile, rank, gate, canary, interleaved live A/B, decide.

Everything privileged goes through ``engine.session``; this module only
decides what to try and judges what it measured. The system returns to its
previous scheduler (EEVDF) when the loop ends, whatever ends it: a decision, the
budget, the target exiting, a phase change, an error or Ctrl-C.
"""

from __future__ import annotations

import shlex
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

from schedagent import engine
from schedagent.agent import live, planner
from schedagent.bench import stats
from schedagent.errors import SchedagentError, TargetGone
from schedagent.kernel import partial, procstat
from schedagent.policy import repo
from schedagent.profile.classify import material_change
from schedagent.profile.model import WorkloadProfile
from schedagent.store import Store

Progress = Callable[[str, int, int], None]
Ended = Literal["complete", "dry-run", "budget", "target-exited", "phase-change"]


@dataclass(frozen=True, slots=True)
class TuneRequest:
    """What ``schedagent tune`` was asked to do."""

    target: partial.Target
    agent: Literal["offline", "anthropic"] = "offline"
    budget_s: float = 600.0
    max_evals: int = 24
    dry_run: bool = False
    observe_s: float = 5.0
    window_s: float = 2.0
    rounds: int = 4
    canary_s: float = 1.0
    confidence: float = 0.95
    #: how many repository policies the planner proposes
    max_candidates: int = 3
    #: the model for --agent anthropic (default: $SCHEDAGENT_MODEL, then llm.DEFAULT_MODEL)
    model: str | None = None
    #: the target's access log: windows are judged on the p99 of its logged latencies
    latency_log: str | None = None


@dataclass(slots=True)
class Trial:
    """One candidate's path through the gates, the canary and the A/B windows."""

    policy: str
    overrides: dict[str, int]
    reason: str
    status: str = "proposed"    # proposed, rejected, measured
    error: str | None = None
    samples: list[float] = field(default_factory=list)
    verdict: str | None = None
    ratio: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None

    @property
    def label(self) -> str:
        return planner.Candidate(self.policy, self.overrides).label


@dataclass(slots=True)
class Decision:
    """What was kept, and the evidence."""

    policy: str                  # "eevdf" when nothing was kept
    tunables: dict[str, int]
    verdict: str
    ratio: float | None
    ci: tuple[float, float] | None
    why: str
    reapply: str | None


@dataclass(slots=True)
class TuneReport:
    """Everything ``tune`` prints, as data."""

    target: str
    profile: dict[str, object]
    slo: str
    metric: dict[str, str]
    agent: str
    baseline_samples: list[float] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    decision: Decision | None = None
    ended: Ended = "complete"
    end_note: str = ""
    evaluations: int = 0
    wall_s: float = 0.0
    #: the model's usage and price (anthropic agent only)
    cost: dict[str, object] = field(default_factory=dict)
    #: windows left out of the comparison, and why (too few wakeups for a p99)
    skipped_windows: list[str] = field(default_factory=list)
    #: seconds spent before the first window: gates and compiles (candidates, probe)
    compile_s: float = 0.0
    #: seconds spent in canaries and measured windows
    measure_s: float = 0.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class _PhaseChanged(Exception):
    pass


class _Loop:
    def __init__(self, req: TuneRequest, store: Store, prof: WorkloadProfile,
                 report: TuneReport, progress: Progress, meter: live.Meter | None = None) -> None:
        self.req, self.store, self.prof, self.report = req, store, prof, report
        # without a meter (unit tests), the cheap counters: nothing to compile or attach
        self.meter = meter or live.Meter(req.target, prof.slo, deep=False)
        self.metric = self.meter.metric
        self.progress = progress
        self.started = time.monotonic()
        self.phase_votes: list[str | None] = []

    def out_of_budget(self) -> str | None:
        elapsed = time.monotonic() - self.started
        if elapsed + 2 * self.req.window_s > self.req.budget_s:
            return f"time budget of {self.req.budget_s:.0f} s used ({elapsed:.0f} s)"
        if self.report.evaluations >= self.req.max_evals:
            return f"{self.req.max_evals} evaluations done (--max-evals)"
        return None

    def baseline_window(self) -> None:
        sample = self.meter.measure(self.req.window_s)
        if sample.target_exited:
            raise TargetGone(self.req.target.pid or 0)
        if sample.invalid is None:
            self.report.baseline_samples.append(sample.value)
        else:
            self.report.skipped_windows.append(f"EEVDF: {sample.invalid}")
        # A material change (CPU use, wakeup rate) under EEVDF in two windows in a row is a
        # new phase. Class labels alone are not used: near a rule boundary they flip.
        change = material_change(self.prof, sample.features)
        self.phase_votes.append(change.reason if change else None)
        if change is not None and self.phase_votes[-2:].count(None) == 0 and \
                len(self.phase_votes) >= 2:
            raise _PhaseChanged(f"the target changed under EEVDF: {change.reason}")

    def canary(self, trial: Trial) -> bool:
        """A short partial-mode run: only the target's threads on the policy."""
        req = engine.RunRequest(trial.policy, trial.overrides, self.req.target,
                                actor="tune-canary")
        try:
            with engine.session(req, self.store) as sess:
                time.sleep(self.req.canary_s)
                problem = sess.problem()
        except TargetGone:
            raise
        except SchedagentError as err:
            problem = str(err)
        if problem is not None:
            trial.status, trial.error = "rejected", f"canary: {problem}"
            return False
        return True

    def candidate_window(self, trial: Trial) -> None:
        req = engine.RunRequest(trial.policy, trial.overrides, self.req.target,
                                switch_all=True, actor="tune")
        with engine.session(req, self.store) as sess:
            time.sleep(min(0.5, self.req.window_s / 4))  # let queues settle on the policy
            sample = self.meter.measure(self.req.window_s)
            problem = sess.problem()
        self.report.evaluations += 1
        if problem is not None:
            trial.status, trial.error = "rejected", f"ejected while measuring: {problem}"
            return
        if sample.target_exited:
            raise TargetGone(self.req.target.pid or 0)
        if sample.invalid is None:
            trial.samples.append(sample.value)
        else:
            self.report.skipped_windows.append(f"{trial.label}: {sample.invalid}")

    def judge(self, trial: Trial) -> None:
        if trial.status == "rejected" or len(trial.samples) < 2:
            return
        cmp = stats.compare(self.report.baseline_samples, trial.samples,
                            self.metric.direction, self.req.confidence)
        trial.status, trial.verdict, trial.ratio = "measured", cmp.verdict, cmp.ratio
        trial.ci, trial.p_value = (cmp.ci_low, cmp.ci_high), cmp.p_value

    def measure(self, trials: list[Trial], rounds: int, step: list[int], total: int) -> None:
        """Interleave: EEVDF window, candidate window, for each live trial, ``rounds`` times."""
        for _ in range(rounds):
            for trial in trials:
                if trial.status == "rejected":
                    continue
                reason = self.out_of_budget()
                if reason is not None:
                    self.report.end_note = reason
                    return
                self.progress(f"EEVDF window, then {trial.label}", step[0], total)
                self.baseline_window()
                self.candidate_window(trial)
                step[0] += 1
        for trial in trials:
            self.judge(trial)


def _gated(trials: list[Trial], store: Store,
           say: Callable[[str], None] | None = None) -> list[Trial]:
    """Run every trial through the gates (no attach); a rejection is recorded on the trial.

    This is where candidates compile, so it runs before any window, and each compile
    says how long it took (``say``).
    """
    for trial in trials:
        started = time.monotonic()
        try:
            result = engine.verify(trial.policy, trial.overrides, store)
        except SchedagentError as err:
            trial.status, trial.error = "rejected", f"gates: {err}"
            if say is not None:
                say(f"gates: {trial.label} rejected after {time.monotonic() - started:.1f} s")
            continue
        if say is not None:
            how = "object cached" if result.object_cached else "compiled"
            say(f"gates: {trial.label} passed ({how}, verifier included) in "
                f"{time.monotonic() - started:.1f} s")
    return trials


def _better_first(trials: list[Trial], direction: str) -> list[Trial]:
    measured = [t for t in trials if t.ratio is not None]
    return sorted(measured, key=lambda t: t.ratio if direction == "lower" else -t.ratio)  # type: ignore[operator]


def tune(req: TuneRequest, store: Store, profile: Callable[[], WorkloadProfile],
         progress: Progress | None = None) -> TuneReport:
    """Run the whole loop once; the system is back on EEVDF when this returns."""
    started = time.monotonic()
    progress = progress or (lambda what, done, total: None)
    progress(f"observing {req.target.describe()} for {req.observe_s:.0f} s", 0, 1)
    prof = profile()
    if req.dry_run:
        return _dry_run(req, store, prof, started)
    # Everything that compiles happens here, before the first window, at raised priority:
    # on the loaded hosts people tune, clang at normal priority beside the load stalled a
    # fresh tune for 20 minutes (issue 14).
    compiling = time.monotonic()
    with procstat.priority():
        trials = _planned(prof, store, req.max_candidates,
                          lambda line: progress(line, 1, 1))  # 1/1: a line that stays
        if live.wants_probe(prof.slo) and req.latency_log is None:
            progress("compiling and attaching the wakeup-latency probe (bcc)", 0, 1)
        meter = live.Meter(req.target, prof.slo, latency_log=req.latency_log).__enter__()
    try:
        report = TuneReport(prof.target, prof.to_json(), prof.slo.describe(),
                            asdict(meter.metric), req.agent)
        report.trials = trials
        report.compile_s = time.monotonic() - compiling
        progress(f"compiles and gates took {report.compile_s:.0f} s; measuring", 1, 1)
        measuring = time.monotonic()
        _run(req, store, prof, report, _Loop(req, store, prof, report, progress, meter))
        report.measure_s = time.monotonic() - measuring
    finally:
        meter.__exit__(None, None, None)
    report.wall_s = time.monotonic() - started
    return report


def _planned(prof: WorkloadProfile, store: Store, max_candidates: int,
             say: Callable[[str], None] | None = None) -> list[Trial]:
    history = {name: store.verdict_summary(name) for name in repo.builtin_names()}
    cands = planner.rank(prof, history, max_candidates)
    return _gated([Trial(c.policy, c.overrides, c.reason) for c in cands], store, say)


def _dry_run(req: TuneRequest, store: Store, prof: WorkloadProfile,
             started: float) -> TuneReport:
    report = TuneReport(prof.target, prof.to_json(), prof.slo.describe(),
                        asdict(live.planned_metric(prof.slo, req.latency_log)), req.agent)
    report.trials = _planned(prof, store, req.max_candidates)
    report.ended = "dry-run"
    report.decision = Decision("eevdf", {}, "not measured", None, None,
                               "--dry-run: candidates proposed and gated, nothing run", None)
    report.wall_s = time.monotonic() - started
    return report


def _run(req: TuneRequest, store: Store, prof: WorkloadProfile, report: TuneReport,
         loop: _Loop) -> None:
    """Canary, measure, halve, decide and record; EEVDF is back when this returns."""
    progress, metric = loop.progress, loop.metric
    stage1 = [t for t in report.trials if t.status != "rejected"]
    total = req.rounds * (len(stage1) + 2)
    step = [0]
    try:
        for trial in stage1:
            progress(f"canary: {trial.label} on the target's threads only", step[0], total)
            loop.canary(trial)
        loop.measure(stage1, req.rounds, step, total)
        ranked = _better_first(stage1, metric.direction)
        if ranked and not report.end_note:
            # successive halving: the leader's tunable variants compete with it
            leader = ranked[0]
            extra = _gated([Trial(v.policy, v.overrides, v.reason)
                            for v in planner.variants(planner.Candidate(leader.policy,
                                                                        leader.overrides))],
                           store)
            report.trials += extra
            loop.measure([leader, *[t for t in extra if t.status != "rejected"]],
                         max(2, req.rounds // 2), step, total)
        report.ended = "budget" if report.end_note else "complete"
    except TargetGone as err:
        report.ended, report.end_note = "target-exited", str(err)
    except _PhaseChanged as err:
        report.ended, report.end_note = "phase-change", str(err)
    for trial in report.trials:
        loop.judge(trial)
    report.decision = _decide(report, metric, req.target)
    _record(store, prof, report)
    progress("done", total, total)


def _decide(report: TuneReport, metric: live.LiveMetric, target: partial.Target) -> Decision:
    winners = [t for t in _better_first(report.trials, metric.direction) if t.verdict == "better"]
    if report.ended in ("target-exited", "phase-change"):
        return Decision("eevdf", {}, "stopped", None, None,
                        f"stopped early ({report.end_note}); nothing kept, EEVDF restored", None)
    if not winners:
        tried = ", ".join(f"{t.label}: {t.verdict or t.status}" for t in report.trials)
        return Decision("eevdf", {}, "no candidate better", None, None,
                        f"no candidate beat EEVDF on {metric.name} at the required confidence "
                        f"({tried}); keeping EEVDF", None)
    best = winners[0]
    assert best.ratio is not None and best.ci is not None
    median_base = statistics.median(report.baseline_samples)
    median_best = statistics.median(best.samples)
    sets = " ".join(f"--set {k}={v}" for k, v in sorted(best.overrides.items()))
    where = f"--pid {target.pid}" if target.pid else f"--cgroup {shlex.quote(target.cgroup or '')}"
    return Decision(
        best.policy, best.overrides, "better", best.ratio, best.ci,
        f"{best.label} changed {metric.name} from a median {median_base:.4g} to "
        f"{median_best:.4g} {metric.unit} (ratio {best.ratio:.3f}, 95% CI "
        f"[{best.ci[0]:.3f}, {best.ci[1]:.3f}], p={best.p_value:.3g}) over "
        f"{len(best.samples)} interleaved windows",
        f"schedagent policies load {best.policy} {where} --switch-all {sets}".strip())


def _record(store: Store, prof: WorkloadProfile, report: TuneReport) -> None:
    for trial in report.trials:
        if trial.verdict is not None:
            store.add_verdict(trial.policy, prof.workload_class, trial.verdict, source="tune",
                              label=trial.label, ratio=trial.ratio, ci=trial.ci,
                              metric=report.metric["name"])
    decision = report.decision
    assert decision is not None
    store.add_event("tune", decision.policy if decision.policy != "eevdf" else None,
                    target=report.target, ended=report.ended, note=report.end_note,
                    decision=asdict(decision), evaluations=report.evaluations,
                    slo=report.slo, workload_class=prof.workload_class)

