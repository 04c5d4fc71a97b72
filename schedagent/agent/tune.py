"""The tuning loop: profile, rank, gate, canary, interleaved live A/B, confirm, decide.

Everything that acts on the system goes through the ``Executor`` port
(``agent/port.py``); this module only decides what to try and judges what it
measured, so it runs on the host against a fake executor. The system returns to its
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

``agent.llm`` drives the same ``Loop`` with the model choosing the candidates; both
decide and record with ``agent.report`` (``leader``, ``decide``, ``record``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Literal

from schedagent.agent import planner
from schedagent.agent.port import Attached, Clock, Executor, Meter, RealClock
from schedagent.agent.report import (
    Confirmation,
    Decision,
    Trial,
    TuneReport,
    better_first,
    choose,
    decide,
    record,
)
from schedagent.bench import stats
from schedagent.errors import SchedagentError, TargetGone
from schedagent.models import LiveMetric, Slo, Target, TuneBudget, WorkloadProfile
from schedagent.policy import repo
from schedagent.profile.classify import material_change
from schedagent.store import Store

Progress = Callable[[str, int, int], None]


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
    #: the SLO given explicitly (--slo); None: inferred from the profile
    slo: Slo | None = None
    #: pids of the competing work tune may move to SCHED_BATCH/IDLE (``others-`` knobs);
    #: empty: others are never touched
    others: tuple[int, ...] = ()
    #: who asked (the daemon socket's peer uid; None: this process's own user)
    caller_uid: int | None = None


class _PhaseChanged(Exception):
    pass


def _quiet(what: str, done: int, total: int) -> None:
    """A ``Progress`` that says nothing."""


def confirm_windows(req: TuneRequest) -> int:
    """Window pairs in the confirmation round: ``--rounds``, and never fewer than the
    rank test needs to be able to reach the chosen alpha (4 at 0.05)."""
    return max(req.budget.rounds, stats.min_windows(1 - req.confidence))


@dataclass(slots=True, eq=False)
class Loop:
    """One tune run's measuring state: candidates are attached through ``executor``
    and judged on ``meter``'s windows, against the budget, on ``clock``'s time."""

    req: TuneRequest
    store: Store
    prof: WorkloadProfile
    report: TuneReport
    executor: Executor
    meter: Meter
    progress: Progress = _quiet
    clock: Clock = field(default_factory=RealClock)
    started: float = field(init=False, default=0.0)
    phase_votes: list[str | None] = field(init=False, default_factory=list)
    #: window pairs held back for the confirmation round while screening runs
    reserve: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.started = self.clock.monotonic()

    @property
    def metric(self) -> LiveMetric:
        """What every window of this run measures."""
        return self.meter.metric

    def gate(self, trials: list[Trial]) -> list[Trial]:
        """The leader's variants through the gates; a rejection is recorded on the trial."""
        return _gated(trials, self.executor)

    def out_of_budget(self) -> str | None:
        """Why one more window pair would overrun the budget (time or evaluations, with
        the confirmation's reserve held back), or None while it fits."""
        elapsed = self.clock.monotonic() - self.started
        pair_s = 2 * self.req.budget.window_s + min(0.5, self.req.budget.window_s / 4)
        if (
            elapsed + 2 * self.req.budget.window_s + self.reserve * pair_s
            > self.req.budget.budget_s
        ):
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
        if (
            change is not None
            and self.phase_votes[-2:].count(None) == 0
            and len(self.phase_votes) >= 2
        ):
            raise _PhaseChanged(f"the target changed under EEVDF: {change.reason}")

    def _attach(self, trial: Trial, *, canary: bool) -> AbstractContextManager[Attached]:
        """The trial held for a ``with`` block: a knob on the target's threads, or the
        policy (the target's threads only for the canary, every task otherwise)."""
        if trial.kind == "knob":
            return self.executor.hold_knob(trial.policy, self.req.target, list(self.req.others))
        return self.executor.attach(trial.policy, trial.overrides, self.req.target, canary=canary)

    def canary(self, trial: Trial) -> bool:
        """A short partial-mode run: only the target's threads on the policy. A knob has
        none: it changes nothing but the target's own threads."""
        if trial.kind == "knob":
            return True
        try:
            with self._attach(trial, canary=True) as sess:
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
        with self._attach(trial, canary=False) as sess:
            self.clock.sleep(min(0.5, self.req.budget.window_s / 4))  # let queues settle on it
            sample = self.meter.measure(self.req.budget.window_s)
            problem = sess.problem()
            trial.placement = trial.placement or sess.placement()
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
        cmp = stats.compare(
            self.report.baseline_samples, trial.samples, self.metric.direction, self.req.confidence
        )
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

    def _interleave(self, trials: list[Trial], rounds: int, step: list[int], total: int) -> None:
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
        for _ in range(2 * want):  # invalid windows are made up for, up to twice over
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
        cmp = stats.compare(
            conf.baseline_samples, conf.samples, self.metric.direction, self.req.confidence
        )
        conf.verdict, conf.ratio = cmp.verdict, cmp.ratio
        conf.ci, conf.p_value = (cmp.ci_low, cmp.ci_high), cmp.p_value


def _gated(
    trials: list[Trial], executor: Executor, say: Callable[[str], None] | None = None
) -> list[Trial]:
    """Run every trial through the gates (no attach); a rejection is recorded on the trial.

    This is where candidates compile, so it runs before any window, and each compile
    says how long it took (``say``).
    """
    for trial in trials:
        started = time.monotonic()
        try:
            if trial.kind == "knob":
                executor.check_knob(trial.policy)
                if say is not None:
                    say(f"gates: {trial.label} allowed on this host (bounds, RT throttle)")
                continue
            result = executor.verify(trial.policy, trial.overrides)
        except SchedagentError as err:
            trial.status, trial.error = "rejected", f"gates: {err}"
            if say is not None:
                say(f"gates: {trial.label} rejected after {time.monotonic() - started:.1f} s")
            continue
        if say is not None:
            how = "object cached" if result.object_cached else "compiled"
            say(
                f"gates: {trial.label} passed ({how}, verifier included) in "
                f"{time.monotonic() - started:.1f} s"
            )
    return trials


def tune(
    req: TuneRequest,
    store: Store,
    executor: Executor,
    progress: Progress | None = None,
    clock: Clock | None = None,
) -> TuneReport:
    """Run the whole loop once; the system is back on EEVDF when this returns.

    ``clock`` times the canaries, the settling before each window and the budget (the
    real clock by default; a simulated one with a fake executor)."""
    started = time.monotonic()
    progress = progress or _quiet
    progress(f"observing {req.target.describe()} for {req.budget.observe_s:.0f} s", 0, 1)
    prof = executor.profile(req.target, req.budget.observe_s, req.slo)
    if req.dry_run:
        return _dry_run(req, store, executor, prof, started)
    with contextlib.ExitStack() as stack:
        # Everything that compiles happens here, before the first window, at raised
        # priority: on the loaded hosts people tune, clang at normal priority beside the
        # load stalled a fresh tune for 20 minutes (issue 14).
        compiling = time.monotonic()
        with executor.priority():
            trials = _planned(
                prof, store, executor, req, lambda line: progress(line, 1, 1)
            )  # 1/1: a line that stays
            if executor.attaches_probe(prof.slo, req.latency_log):
                progress("compiling and attaching the wakeup-latency probe (bcc)", 0, 1)
            meter = stack.enter_context(executor.meter(req.target, prof.slo, req.latency_log))
        report = TuneReport(
            prof.target, prof.to_json(), prof.slo.describe(), asdict(meter.metric), req.agent
        )
        report.trials = trials
        report.compile_s = time.monotonic() - compiling
        progress(f"compiles and gates took {report.compile_s:.0f} s; measuring", 1, 1)
        measuring = time.monotonic()
        report.first_window_s = measuring - started
        run_trials(Loop(req, store, prof, report, executor, meter, progress, clock or RealClock()))
        report.measure_s = time.monotonic() - measuring
    report.wall_s = time.monotonic() - started
    return report


def _planned(
    prof: WorkloadProfile,
    store: Store,
    executor: Executor,
    req: TuneRequest,
    say: Callable[[str], None] | None = None,
) -> list[Trial]:
    """The knobs, least intrusive first, then the ranked policies, through the gates."""
    history = {name: store.verdict_summary(name) for name in repo.known_names()}
    cands = [
        *planner.knobs(prof, req.budget.max_knobs, others=bool(req.others)),
        *planner.rank(prof, history, req.budget.max_candidates),
    ]
    return _gated(
        [Trial(c.policy, c.overrides, c.reason, kind=c.kind) for c in cands], executor, say
    )


def _dry_run(
    req: TuneRequest, store: Store, executor: Executor, prof: WorkloadProfile, started: float
) -> TuneReport:
    metric = executor.planned_metric(prof.slo, req.latency_log)
    report = TuneReport(prof.target, prof.to_json(), prof.slo.describe(), asdict(metric), req.agent)
    report.trials = _planned(prof, store, executor, req)
    report.ended = "dry-run"
    report.decision = Decision(
        "eevdf",
        {},
        "not measured",
        None,
        None,
        "--dry-run: candidates proposed and gated, nothing run",
        None,
    )
    report.wall_s = time.monotonic() - started
    return report


def run_trials(loop: Loop) -> None:
    """Canary, screen, halve, confirm, decide and record the report's proposed trials;
    EEVDF is back when this returns."""
    req, report, progress, metric = loop.req, loop.report, loop.progress, loop.metric
    stage1 = [t for t in report.trials if t.status != "rejected"]
    n_confirm = confirm_windows(req)
    total = req.budget.rounds * (len(stage1) + 2) + n_confirm
    step = [0]
    try:
        for trial in stage1:
            progress(f"canary: {trial.label} on the target's threads only", step[0], total)
            loop.canary(trial)
        loop.reserve = n_confirm
        loop.measure(stage1, req.budget.rounds, step, total)
        ranked = [t for t in better_first(stage1, metric.direction) if t.kind == "policy"]
        if ranked and not report.end_note:
            # successive halving: the leading policy's tunable variants compete with it
            first = ranked[0]
            extra = loop.gate(
                [
                    Trial(v.policy, v.overrides, v.reason)
                    for v in planner.variants(planner.Candidate(first.policy, first.overrides))
                ]
            )
            report.trials += extra
            loop.measure(
                [first, *[t for t in extra if t.status != "rejected"]],
                max(2, req.budget.rounds // 2),
                step,
                total,
            )
        report.end_note = ""  # screening stopping at the reserve is the plan, not an end
        choice = choose(
            report.trials, metric.direction, loop.prof.slo, metric, report.baseline_samples
        )
        report.choice = choice.note
        if choice.trial is not None:
            loop.confirm(choice.trial, step, total)
        report.ended = "budget" if report.end_note else "complete"
    except TargetGone as err:
        report.ended, report.end_note = "target-exited", str(err)
    except _PhaseChanged as err:
        report.ended, report.end_note = "phase-change", str(err)
    report.decision = decide(report, metric, req.target)
    record(loop.store, loop.prof, report)
    progress("done", total, total)
