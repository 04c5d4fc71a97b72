"""What one tune reports and decides: its trials, the leader, the decision and its records.

A trial's screening verdict only chooses the leader; the leader is kept only if its
confirmation, on fresh windows, says ``better`` (issue 13). ``agent.tune`` and
``agent.llm`` both decide and record with this module.
"""

from __future__ import annotations

import shlex
import statistics
from dataclasses import asdict, dataclass, field
from typing import Literal

from schedagent.agent import planner
from schedagent.models import Knob, LiveMetric, Slo, Target, WorkloadProfile
from schedagent.store import Store

Ended = Literal["complete", "dry-run", "budget", "target-exited", "phase-change"]


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
    status: str = "proposed"  # proposed, rejected, measured
    error: str | None = None
    samples: list[float] = field(default_factory=list)
    verdict: str | None = None
    ratio: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    #: the leader only: its confirmation round, which alone decides whether it is kept
    confirmation: Confirmation | None = None
    #: ``knob``: ``policy`` is an EEVDF knob's label; ``policy``: a sched_ext policy
    kind: planner.InterventionKind = "policy"
    #: how intrusive it is (``planner.RANK``; 1 is least), set from the kind
    rank: int = 0
    #: how its measured windows really ran when not as asked (confined to partial mode)
    placement: str = ""

    def __post_init__(self) -> None:
        self.rank = self.rank or planner.rank_of(self.kind, self.policy)

    @property
    def label(self) -> str:
        """The policy and its overrides, as reports print them."""
        return planner.Candidate(self.policy, self.overrides).label

    def median(self) -> float | None:
        """The median of its screening windows (None without any)."""
        return statistics.median(self.samples) if self.samples else None


@dataclass(slots=True)
class Decision:
    """What was kept, and the evidence."""

    policy: str  # "eevdf" when nothing was kept; a knob's label for a knob
    tunables: dict[str, int]
    verdict: str
    ratio: float | None
    ci: tuple[float, float] | None
    why: str
    reapply: str | None
    kind: planner.InterventionKind = "policy"


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
    #: seconds from the start of the run to its first measured window (profile included)
    first_window_s: float = 0.0
    #: why the confirmed trial was picked over the others (``choose``)
    choice: str = ""

    def to_json(self) -> dict[str, object]:
        """The report as JSON-ready data (``tune --json``)."""
        return asdict(self)


def better_first(trials: list[Trial], direction: str) -> list[Trial]:
    sign = 1.0 if direction == "lower" else -1.0
    return sorted(
        (t for t in trials if t.ratio is not None), key=lambda t: sign * (t.ratio or 0.0)
    )  # every ratio here is set


#: How much screening evidence a verdict carries when choosing the leader: a trial that
#: screened ``better`` leads over one with a better ratio on too few windows to decide
#: (a variant cut short by the budget once led on 1 window over ``target``, better on 5,
#: and its confirmation then failed).
_EVIDENCE = {"better": 0, "no-difference": 1, "insufficient": 2}


def leader(trials: list[Trial], direction: str) -> Trial | None:
    """The screening leader: the strongest evidence, then the best ratio that points the
    better way; never ``worse``."""
    eligible = []
    for t in better_first(trials, direction):
        assert t.ratio is not None
        pointing = t.ratio < 1 if direction == "lower" else t.ratio > 1
        if t.status != "rejected" and t.verdict != "worse" and pointing:
            eligible.append(t)
    # sorted() is stable: within one kind of evidence the better ratio stays first
    ranked = sorted(eligible, key=lambda t: _EVIDENCE.get(t.verdict or "", len(_EVIDENCE)))
    return ranked[0] if ranked else None


def slo_reached(slo: Slo, metric: LiveMetric, value: float) -> bool | None:
    """Whether a window median meets the SLO's threshold; None where the SLO has none
    (minimise, maximise) or the live metric stands for it in another quantity (a mean
    runqueue wait for a p99 SLO, bytes/s for a completion time)."""
    if slo.target is None or slo.direction not in ("<=", ">=") or slo.unit != metric.unit:
        return None
    if slo.metric not in _MEASURES.get(metric.name, ()) and not (
        metric.name == "p99_request_us" and "request" in slo.metric
    ):
        return None  # e.g. a wakeup-latency SLO while windows read the request log
    return value <= slo.target if slo.direction == "<=" else value >= slo.target


#: which SLO metrics a live metric measures directly
_MEASURES = {
    "p99_wakeup_us": ("p99_wakeup_latency", "p99_latency"),
    "p99_request_us": ("p99_request_latency", "p99_latency"),
}


#: where the SLO gives no threshold the live metric can be held to, a less intrusive
#: trial is preferred only while its screening ratio is within this factor of the best
#: one's: "better" alone kept nice:-10 at 0.59x EEVDF's p99 beside fifo:1 at 0.17x
NEAR_BEST = 1.25


def choose(
    trials: list[Trial],
    direction: str,
    slo: Slo,
    metric: LiveMetric,
    baseline: list[float] | None = None,
) -> Choice:
    """The one trial to confirm, among those that screened ``better``:

    - where the SLO has a threshold the live metric measures and EEVDF's own windows
      (``baseline``) miss it, the least intrusive that reached it; if none did, the
      best, saying why it went further;
    - otherwise (no such threshold, or EEVDF meets it already, so every candidate no
      better than EEVDF would "reach" it too) the least intrusive whose ratio is within
      ``NEAR_BEST`` of the best's, saying which less intrusive ones fell short;
    - if none screened ``better``, the screening ``leader``.

    One trial is confirmed, so the decision stays one test at alpha whichever rule
    picked it."""
    better = [t for t in better_first(trials, direction) if t.verdict == "better"]
    better = [t for t in better if t.status != "rejected"]
    if not better:
        return Choice(leader(trials, direction), "")
    best = better[0]
    ranked = sorted(better, key=lambda t: t.rank)  # stable: the better ratio first in a rank
    met_already = bool(baseline) and slo_reached(slo, metric, statistics.median(baseline or [0]))

    def reached(t: Trial) -> bool | None:
        return None if met_already else slo_reached(slo, metric, t.median() or 0.0)

    if all(reached(t) is None for t in better):
        near = [t for t in ranked if _near(t, best, direction)]
        pick = near[0]  # the best itself is always near
        note = (
            f"{pick.label} is the least intrusive intervention within {NEAR_BEST:g}x of the "
            f"best screening ratio ({best.label}, {best.ratio:.3f})"
        )
        if met_already:
            note = f"EEVDF meets the SLO already ({slo.describe()}), so {note}"
        short = [t for t in ranked if t.rank < pick.rank]
        if short:
            note += "; less intrusive ones screened better but fell short: " + ", ".join(
                f"{t.label} {t.ratio:.3f}" for t in short
            )
        return Choice(pick, note)
    hit = [t for t in ranked if reached(t)]
    if hit:
        pick = hit[0]
        skipped = [  # less intrusive, or as intrusive with a better ratio, yet missed it
            t for t in ranked if t is not pick and t.rank <= pick.rank and reached(t) is False
        ]
        note = f"{pick.label} is the least intrusive intervention that screened better and reached the SLO"
        if skipped:
            note += f"; as or less intrusive ones missed the SLO ({slo.describe()}): " + _reached(
                skipped, slo, metric
            )
        return Choice(pick, note)
    return Choice(
        best,
        f"nothing that screened better reached the SLO ({slo.describe()}): "
        f"{_reached(ranked, slo, metric)}; went furthest with the best, {best.label}",
    )


def _near(t: Trial, best: Trial, direction: str) -> bool:
    assert t.ratio is not None and best.ratio is not None
    if direction == "lower":
        return t.ratio <= best.ratio * NEAR_BEST
    return t.ratio >= best.ratio / NEAR_BEST


def _reached(trials: list[Trial], slo: Slo, metric: LiveMetric) -> str:
    return ", ".join(
        f"{t.label} reached {metric.name} {t.median() or 0.0:.4g} {metric.unit}" for t in trials
    )


@dataclass(frozen=True, slots=True)
class Choice:
    """The trial to confirm, and why it was picked over the others (empty: by ratio)."""

    trial: Trial | None
    note: str


def decide(report: TuneReport, metric: LiveMetric, target: Target) -> Decision:
    """What to keep, and why: the trial whose confirmation said ``better`` on ``metric``,
    else EEVDF (also when the run stopped early); ``reapply`` is the command that loads it."""
    if report.ended in ("target-exited", "phase-change"):
        return Decision(
            "eevdf",
            {},
            "stopped",
            None,
            None,
            f"stopped early ({report.end_note}); nothing kept, EEVDF restored",
            None,
        )
    screened = ", ".join(
        f"{t.label}: {t.verdict or t.status}{f' on {len(t.samples)} windows' if t.samples else ''}"
        for t in report.trials
    )
    best = next((t for t in report.trials if t.confirmation is not None), None)
    conf = best.confirmation if best is not None else None
    if best is None or conf is None:
        return Decision(
            "eevdf",
            {},
            "no candidate better",
            None,
            None,
            f"no candidate pointed better than EEVDF on {metric.name} in screening "
            f"({screened} against {len(report.baseline_samples)} EEVDF windows); "
            "keeping EEVDF",
            None,
        )
    windows = (
        f"{len(conf.samples)} fresh interleaved windows against "
        f"{len(conf.baseline_samples)} of EEVDF"
    )
    if conf.verdict != "better":
        return Decision(
            "eevdf",
            {},
            "not confirmed",
            conf.ratio,
            conf.ci,
            f"screening led with {best.label} ({screened} against "
            f"{len(report.baseline_samples)} EEVDF windows); its confirmation on "
            f"{windows} said {conf.verdict}"
            f"{_evidence(conf) if conf.ratio is not None else ''}; keeping EEVDF",
            None,
        )
    assert conf.ratio is not None and conf.ci is not None
    sets = " ".join(f"--set {k}={v}" for k, v in sorted(best.overrides.items()))
    where = f"--pid {target.pid}" if target.pid else f"--cgroup {shlex.quote(target.cgroup or '')}"
    reapply = (
        _knob_command(best.policy, target)
        if best.kind == "knob"
        else f"schedagent policies load {best.policy} {where} --switch-all {sets}".strip()
    )
    chosen = f"{report.choice}. " if report.choice else ""
    return Decision(
        best.policy,
        best.overrides,
        "better",
        conf.ratio,
        conf.ci,
        f"{chosen}{best.label} changed {metric.name} from a median "
        f"{statistics.median(conf.baseline_samples):.4g} to "
        f"{statistics.median(conf.samples):.4g} {metric.unit}{_evidence(conf)}, confirmed on "
        f"{windows} that took no part in choosing it (screening: {screened} against "
        f"{len(report.baseline_samples)} EEVDF windows)",
        reapply,
        best.kind,
    )


def _knob_command(label: str, target: Target) -> str | None:
    """The shell one-liner that applies a knob to every thread of a pid target (None for
    a cgroup, and for a custom slice, which no standard command sets)."""
    knob = Knob.parse(label)
    if target.pid is None:
        return None
    if knob.kind == "nice":
        return f"renice -n {knob.value} -p $(ps -L -o tid= -p {target.pid})"
    if knob.kind in ("fifo", "rr"):
        return f"chrt --{'fifo' if knob.kind == 'fifo' else 'rr'} -a -p {knob.value} {target.pid}"
    return None


def _evidence(conf: Confirmation) -> str:
    assert conf.ratio is not None and conf.ci is not None and conf.p_value is not None
    return (
        f" (ratio {conf.ratio:.3f}, 95% CI [{conf.ci[0]:.3f}, {conf.ci[1]:.3f}], "
        f"p={conf.p_value:.3g})"
    )


def record(store: Store, prof: WorkloadProfile, report: TuneReport) -> None:
    """Each trial's verdict goes to the planner's history; the confirmed leader's is its
    confirmation (its screening verdict was chosen for looking good). ``insufficient`` is
    stored as such, and the history does not count it as a tie."""
    for trial in report.trials:
        conf = trial.confirmation
        judged: Confirmation | Trial = trial
        source = "tune"
        if conf is not None and conf.verdict is not None:
            judged, source = conf, "tune-confirmation"
        if judged.verdict is None:
            continue
        store.add_verdict(
            trial.policy,
            prof.workload_class,
            judged.verdict,
            source=source,
            label=trial.label,
            ratio=judged.ratio,
            ci=judged.ci,
            metric=report.metric["name"],
            windows=len(judged.samples),
        )
    decision = report.decision
    assert decision is not None
    store.add_event(
        "tune",
        decision.policy if decision.policy != "eevdf" else None,
        target=report.target,
        ended=report.ended,
        note=report.end_note,
        decision=asdict(decision),
        evaluations=report.evaluations,
        slo=report.slo,
        workload_class=prof.workload_class,
    )
