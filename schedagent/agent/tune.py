"""The tuning loop: profile, rank, gate, canary, interleaved live A/B, confirm, decide.

Everything privileged goes through ``engine.session``; this module only
decides what to try and judges what it measured. The system returns to its
previous scheduler (EEVDF) when the loop ends, whatever ends it: a decision, the
budget, the target exiting, a phase change, an error or Ctrl-C.

The decision rule holds its error rate by confirmation (issue 13): screening
(every candidate, then the leader's tunable variants) only chooses a leader; the
leader is then measured again on fresh interleaved windows, EEVDF and leader,
that took no part in choosing it, and it is kept only if that one comparison says
``better``. A best-of-five over one pooled baseline, kept on its own screening
verdict, kept a policy no better than EEVDF up to 8% of the time; the
confirmation makes it one test at alpha, whatever screening did. The
confirmation's windows are reserved in the budget before screening starts.
"""

from __future__ import annotations

import contextlib
import shlex
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from schedagent.execution import engine
from schedagent.agent import planner
from schedagent.execution import measure as live
from schedagent.bench import stats
from schedagent.errors import SchedagentError, TargetGone
from schedagent.kernel import partial, procstat
from schedagent.policy import repo
from schedagent.profile.classify import material_change
from schedagent.models import TuneBudget, Target, WorkloadProfile
from schedagent.store import Store

Progress = Callable[[str, int, int], None]
Ended = Literal["complete", "dry-run", "budget", "target-exited", "phase-change"]


@dataclass(frozen=True, slots=True)
class TuneRequest:
    """What ``schedagent tune`` was asked to do."""

    target: Target
    agent: Literal["offline", "anthropic"] = "offline"
    budget: TuneBudget = field(default_factory=TuneBudget)
    dry_run: bool = False
    confidence: float = 0.95
    #: the model for --agent anthropic (default: $SCHEDAGENT_MODEL, then llm.DEFAULT_MODEL)
    model: str | None = None
    #: the target's access log: windows are judged on the p99 of its logged latencies
    latency_log: str | None = None


@dataclass(slots=True)
class Confirmation:
    """The leader against EEVDF on fresh interleaved windows, apart from screening."""

    baseline_samples: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    verdict: str | None = None
    ratio: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None


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
    #: the leader only: its confirmation round, which alone decides whether it is kept
    confirmation: Confirmation | None = None

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


class Clock(Protocol):
    """Time for the loop: the real one, or a simulated one in tests and simulations."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class _RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _Session(Protocol):
    def problem(self) -> str | None: ...


#: how the loop attaches a policy (``engine.session``, or a fake)
Sessions = Callable[[engine.RunRequest, Store], contextlib.AbstractContextManager[_Session]]


def confirm_windows(req: TuneRequest) -> int:
    """Window pairs in the confirmation round: ``--rounds``, and never fewer than the
    rank test needs to be able to reach the chosen alpha (4 at 0.05)."""
    return max(req.budget.rounds, stats.min_windows(1 - req.confidence))


class _Meter(Protocol):
    metric: live.LiveMetric

    def measure(self, window_s: float) -> live.Sample: ...


class _Loop:
    def __init__(self, req: TuneRequest, store: Store, prof: WorkloadProfile,
                 report: TuneReport, progress: Progress, meter: _Meter | None = None,
                 sessions: Sessions | None = None, clock: Clock | None = None) -> None:
        self.req, self.store, self.prof, self.report = req, store, prof, report
        # without a meter (unit tests), the cheap counters: nothing to compile or attach
        self.meter: _Meter = meter or live.Meter(req.target, prof.slo, deep=False)
        self.metric = self.meter.metric
        self.progress = progress
        self.sessions: Sessions = sessions or engine.session
        self.clock: Clock = clock or _RealClock()
        self.started = self.clock.monotonic()
        self.phase_votes: list[str | None] = []
        #: window pairs held back for the confirmation round while screening runs
        self.reserve = 0

    def gate(self, trials: list[Trial]) -> list[Trial]:
        """The leader's variants through the gates (a fake in simulations)."""
        return _gated(trials, self.store)

    def out_of_budget(self) -> str | None:
        elapsed = self.clock.monotonic() - self.started
        pair_s = 2 * self.req.budget.window_s + min(0.5, self.req.budget.window_s / 4)
        if elapsed + 2 * self.req.budget.window_s + self.reserve * pair_s > self.req.budget.budget_s:
            return f"time budget of {self.req.budget.budget_s:.0f} s used ({elapsed:.0f} s)"
        if self.report.evaluations + self.reserve >= self.req.budget.max_evals:
            held = f", {self.reserve} held for the confirmation" if self.reserve else ""
            return f"{self.req.budget.max_evals} evaluations done (--max-evals{held})"
        return None

    def baseline_window(self, into: list[float] | None = None) -> None:
        """One EEVDF window; a valid one is appended to ``into`` (the pooled baseline)."""
        sample = self.meter.measure(self.req.budget.window_s)
        if sample.target_exited:
            raise TargetGone(self.req.target.pid or 0)
        if sample.invalid is None:
            (self.report.baseline_samples if into is None else into).append(sample.value)
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
            with self.sessions(req, self.store) as sess:
                self.clock.sleep(self.req.budget.canary_s)
                problem = sess.problem()
        except TargetGone:
            raise
        except SchedagentError as err:
            problem = str(err)
        if problem is not None:
            trial.status, trial.error = "rejected", f"canary: {problem}"
            return False
        return True

    def candidate_window(self, trial: Trial, into: list[float] | None = None) -> None:
        """One window on the trial's policy; a valid one goes to ``into`` (its samples)."""
        req = engine.RunRequest(trial.policy, trial.overrides, self.req.target,
                                switch_all=True, actor="tune")
        with self.sessions(req, self.store) as sess:
            self.clock.sleep(min(0.5, self.req.budget.window_s / 4))  # let queues settle on it
            sample = self.meter.measure(self.req.budget.window_s)
            problem = sess.problem()
        self.report.evaluations += 1
        if problem is not None:
            trial.status, trial.error = "rejected", f"ejected while measuring: {problem}"
            return
        if sample.target_exited:
            raise TargetGone(self.req.target.pid or 0)
        if sample.invalid is None:
            (trial.samples if into is None else into).append(sample.value)
        else:
            self.report.skipped_windows.append(f"{trial.label}: {sample.invalid}")

    def judge(self, trial: Trial) -> None:
        """The trial's screening verdict against the pooled EEVDF windows."""
        if trial.status == "rejected" or not trial.samples:
            return
        trial.status = "measured"
        if not self.report.baseline_samples:
            trial.verdict = "insufficient"
            return
        cmp = stats.compare(self.report.baseline_samples, trial.samples,
                            self.metric.direction, self.req.confidence)
        trial.verdict, trial.ratio = cmp.verdict, cmp.ratio
        trial.ci, trial.p_value = (cmp.ci_low, cmp.ci_high), cmp.p_value

    def measure(self, trials: list[Trial], rounds: int, step: list[int], total: int) -> None:
        """Interleave: EEVDF window, candidate window, for each live trial, ``rounds`` times;
        then judge them on what was measured, however the rounds ended."""
        try:
            self._interleave(trials, rounds, step, total)
        finally:
            for trial in trials:
                self.judge(trial)

    def _interleave(self, trials: list[Trial], rounds: int, step: list[int],
                    total: int) -> None:
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

    def confirm(self, leader: Trial, step: list[int], total: int) -> None:
        """Fresh interleaved windows, EEVDF then the leader; judged on those alone."""
        conf = leader.confirmation = Confirmation()
        self.reserve = 0
        want = confirm_windows(self.req)
        for _ in range(2 * want):   # invalid windows are made up for, up to twice over
            if min(len(conf.samples), len(conf.baseline_samples)) >= want:
                break
            reason = self.out_of_budget()
            if reason is not None:
                self.report.end_note = reason
                break
            self.progress(f"confirming {leader.label}: EEVDF window, then it", step[0], total)
            self.baseline_window(conf.baseline_samples)
            self.candidate_window(leader, conf.samples)
            step[0] += 1
            if leader.status == "rejected":
                conf.verdict = "ejected"
                return
        if not conf.samples or not conf.baseline_samples:
            conf.verdict = "insufficient"
            return
        cmp = stats.compare(conf.baseline_samples, conf.samples, self.metric.direction,
                            self.req.confidence)
        conf.verdict, conf.ratio = cmp.verdict, cmp.ratio
        conf.ci, conf.p_value = (cmp.ci_low, cmp.ci_high), cmp.p_value


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


#: How much screening evidence a verdict carries when choosing the leader: a trial that
#: screened ``better`` leads over one with a better ratio on too few windows to decide
#: (a variant cut short by the budget once led on 1 window over ``target``, better on 5,
#: and its confirmation then failed).
_EVIDENCE = {"better": 0, "no-difference": 1, "insufficient": 2}


def _leader(trials: list[Trial], direction: str) -> Trial | None:
    """The screening leader: the strongest evidence, then the best ratio that points the
    better way; never ``worse``."""
    eligible = []
    for t in _better_first(trials, direction):
        assert t.ratio is not None
        pointing = t.ratio < 1 if direction == "lower" else t.ratio > 1
        if t.status != "rejected" and t.verdict != "worse" and pointing:
            eligible.append(t)
    # sorted() is stable: within one kind of evidence the better ratio stays first
    ranked = sorted(eligible, key=lambda t: _EVIDENCE.get(t.verdict or "", len(_EVIDENCE)))
    return ranked[0] if ranked else None


def tune(req: TuneRequest, store: Store, profile: Callable[[], WorkloadProfile],
         progress: Progress | None = None) -> TuneReport:
    """Run the whole loop once; the system is back on EEVDF when this returns."""
    started = time.monotonic()
    progress = progress or (lambda what, done, total: None)
    progress(f"observing {req.target.describe()} for {req.budget.observe_s:.0f} s", 0, 1)
    prof = profile()
    if req.dry_run:
        return _dry_run(req, store, prof, started)
    # Everything that compiles happens here, before the first window, at raised priority:
    # on the loaded hosts people tune, clang at normal priority beside the load stalled a
    # fresh tune for 20 minutes (issue 14).
    compiling = time.monotonic()
    with procstat.priority():
        trials = _planned(prof, store, req.budget.max_candidates,
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
    report.trials = _planned(prof, store, req.budget.max_candidates)
    report.ended = "dry-run"
    report.decision = Decision("eevdf", {}, "not measured", None, None,
                               "--dry-run: candidates proposed and gated, nothing run", None)
    report.wall_s = time.monotonic() - started
    return report


def _run(req: TuneRequest, store: Store, prof: WorkloadProfile, report: TuneReport,
         loop: _Loop) -> None:
    """Canary, screen, halve, confirm, decide and record; EEVDF is back when this returns."""
    progress, metric = loop.progress, loop.metric
    stage1 = [t for t in report.trials if t.status != "rejected"]
    n_confirm = confirm_windows(req)
    total = req.budget.rounds * (len(stage1) + 2) + n_confirm
    step = [0]
    leader: Trial | None = None
    try:
        for trial in stage1:
            progress(f"canary: {trial.label} on the target's threads only", step[0], total)
            loop.canary(trial)
        loop.reserve = n_confirm
        loop.measure(stage1, req.budget.rounds, step, total)
        ranked = _better_first(stage1, metric.direction)
        if ranked and not report.end_note:
            # successive halving: the leader's tunable variants compete with it
            first = ranked[0]
            extra = loop.gate([Trial(v.policy, v.overrides, v.reason)
                               for v in planner.variants(planner.Candidate(first.policy,
                                                                           first.overrides))])
            report.trials += extra
            loop.measure([first, *[t for t in extra if t.status != "rejected"]],
                         max(2, req.budget.rounds // 2), step, total)
        report.end_note = ""  # screening stopping at the reserve is the plan, not an end
        leader = _leader(report.trials, metric.direction)
        if leader is not None:
            loop.confirm(leader, step, total)
        report.ended = "budget" if report.end_note else "complete"
    except TargetGone as err:
        report.ended, report.end_note = "target-exited", str(err)
    except _PhaseChanged as err:
        report.ended, report.end_note = "phase-change", str(err)
    report.decision = _decide(report, metric, req.target)
    _record(store, prof, report)
    progress("done", total, total)


def _decide(report: TuneReport, metric: live.LiveMetric, target: Target) -> Decision:
    if report.ended in ("target-exited", "phase-change"):
        return Decision("eevdf", {}, "stopped", None, None,
                        f"stopped early ({report.end_note}); nothing kept, EEVDF restored", None)
    screened = ", ".join(f"{t.label}: {t.verdict or t.status}"
                         f"{f' on {len(t.samples)} windows' if t.samples else ''}"
                         for t in report.trials)
    best = next((t for t in report.trials if t.confirmation is not None), None)
    conf = best.confirmation if best is not None else None
    if best is None or conf is None:
        return Decision("eevdf", {}, "no candidate better", None, None,
                        f"no candidate pointed better than EEVDF on {metric.name} in screening "
                        f"({screened} against {len(report.baseline_samples)} EEVDF windows); "
                        "keeping EEVDF", None)
    windows = (f"{len(conf.samples)} fresh interleaved windows against "
               f"{len(conf.baseline_samples)} of EEVDF")
    if conf.verdict != "better":
        return Decision("eevdf", {}, "not confirmed", conf.ratio, conf.ci,
                        f"screening led with {best.label} ({screened} against "
                        f"{len(report.baseline_samples)} EEVDF windows); its confirmation on "
                        f"{windows} said {conf.verdict}"
                        f"{_evidence(conf) if conf.ratio is not None else ''}; keeping EEVDF",
                        None)
    assert conf.ratio is not None and conf.ci is not None
    sets = " ".join(f"--set {k}={v}" for k, v in sorted(best.overrides.items()))
    where = f"--pid {target.pid}" if target.pid else f"--cgroup {shlex.quote(target.cgroup or '')}"
    return Decision(
        best.policy, best.overrides, "better", conf.ratio, conf.ci,
        f"{best.label} changed {metric.name} from a median "
        f"{statistics.median(conf.baseline_samples):.4g} to "
        f"{statistics.median(conf.samples):.4g} {metric.unit}{_evidence(conf)}, confirmed on "
        f"{windows} that took no part in choosing it (screening: {screened} against "
        f"{len(report.baseline_samples)} EEVDF windows)",
        f"schedagent policies load {best.policy} {where} --switch-all {sets}".strip())


def _evidence(conf: Confirmation) -> str:
    assert conf.ratio is not None and conf.ci is not None and conf.p_value is not None
    return (f" (ratio {conf.ratio:.3f}, 95% CI [{conf.ci[0]:.3f}, {conf.ci[1]:.3f}], "
            f"p={conf.p_value:.3g})")


def _record(store: Store, prof: WorkloadProfile, report: TuneReport) -> None:
    """Each trial's verdict goes to the planner's history; the confirmed leader's is its
    confirmation (its screening verdict was chosen for looking good). ``insufficient`` is
    stored as such, and the history does not count it as a tie."""
    for trial in report.trials:
        conf = trial.confirmation
        if conf is not None and conf.verdict is not None:
            store.add_verdict(trial.policy, prof.workload_class, conf.verdict,
                              source="tune-confirmation", label=trial.label, ratio=conf.ratio,
                              ci=conf.ci, metric=report.metric["name"],
                              windows=len(conf.samples))
        elif trial.verdict is not None:
            store.add_verdict(trial.policy, prof.workload_class, trial.verdict, source="tune",
                              label=trial.label, ratio=trial.ratio, ci=trial.ci,
                              metric=report.metric["name"], windows=len(trial.samples))
    decision = report.decision
    assert decision is not None
    store.add_event("tune", decision.policy if decision.policy != "eevdf" else None,
                    target=report.target, ended=report.ended, note=report.end_note,
                    decision=asdict(decision), evaluations=report.evaluations,
                    slo=report.slo, workload_class=prof.workload_class)
