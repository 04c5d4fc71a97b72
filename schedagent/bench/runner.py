"""The A/B protocol: interleaved runs in one boot, validity checks, verdicts.

Each comparison runs a workload under several arms (EEVDF, policies, and for
latency workloads the idle-system floor) in rounds. Every round runs each arm
once, in a seeded random order, after one warm-up run per arm. A run is
**invalid** when:

- any thread of the workload was runnable but got no CPU for ``stall_s``
  (a scheduler starving part of the workload, including the measuring thread);
- its "work done" differs from the baseline's (it finished by doing less);
- its metrics could not be read, it timed out, or the scheduler was ejected.

Invalid runs never enter the statistics. An arm with fewer than two valid runs
gets the verdict ``invalid``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import select
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from schedagent.bench import stats
from schedagent.bench.workload import (
    ExtractError,
    Workload,
    build,
    extract_metrics,
    extract_work_done,
)
from schedagent.errors import TargetGone
from schedagent.kernel import observer, partial, procstat
from schedagent.kernel.proctree import stop_tree
from schedagent.models import Knob

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
ArmVerdict = Literal["better", "worse", "no-difference", "insufficient", "invalid"]

EEVDF = "eevdf"
FLOOR = "floor"
#: a runnable thread with no CPU progress for this long makes the run invalid
STALL_S = 2.0
_SAMPLE_S = 0.1


@dataclass(frozen=True, slots=True)
class Arm:
    """One side of a comparison: EEVDF, the idle floor, a policy with tunables, or EEVDF
    with one of its own knobs (``nice:-10``, ``fifo:1``, ...: what an administrator tries)."""

    policy: str | None
    overrides: dict[str, int] = field(default_factory=dict)
    floor: bool = False
    #: tells apart two arms of the same scheduler (an A/A run)
    tag: str = ""
    knob: Knob | None = None

    @property
    def label(self) -> str:
        if self.floor:
            return FLOOR
        if self.knob is not None:
            return f"{self.knob.label}{self.tag}"
        name = EEVDF if self.policy is None else self.policy
        sets = ",".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        return f"{name}[{sets}]{self.tag}" if sets else f"{name}{self.tag}"

    @staticmethod
    def parse(spec: str, overrides: dict[str, int] | None = None) -> Arm:
        """``eevdf`` names the kernel's default scheduler wherever a policy is expected."""
        if spec == EEVDF:
            if overrides:
                raise ValueError("eevdf has no tunables; drop --set or name a policy")
            return Arm(None)
        return Arm(spec, dict(overrides or {}))

    @staticmethod
    def of_knob(spec: str) -> Arm:
        """An EEVDF arm with one knob; ConfigError says what a knob looks like."""
        return Arm(None, knob=Knob.parse(spec))


def is_knob_label(label: str) -> bool:
    """Whether an arm label names an EEVDF knob, not a policy."""
    return Knob.is_label(label.rstrip("'"))


@dataclass(slots=True)
class RunRecord:
    """One run of one arm."""

    arm: str
    level: str
    round: int
    warmup: bool
    valid: bool = True
    invalid_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    work_done: str | None = None
    wall_s: float = 0.0
    threads_seen: int = 0
    worst_stall_ms: float = 0.0

    def invalidate(self, reason: str) -> None:
        if self.valid:
            self.valid, self.invalid_reason = False, reason


class PolicySession(Protocol):
    """What the runner needs from an attached scheduler (see engine.session)."""

    def set_targets(self, tgids: list[int]) -> None: ...

    def problem(self) -> str | None: ...


@runtime_checkable
class OthersAware(Protocol):
    """A session that also acts on the workload's background (an ``others-`` knob)."""

    def set_others(self, tgids: list[int]) -> None: ...


#: attaches an arm's policy for one run; yields None for EEVDF and the floor
SessionFactory = Callable[[Arm], contextlib.AbstractContextManager[PolicySession | None]]


@dataclass(slots=True)
class _ThreadTrack:
    run_ns: int
    state: str
    stuck_since: float | None = None
    worst_stall_s: float = 0.0


class ExitClock:
    """When a process exits, to the millisecond: a thread waits on its pidfd. (The run's
    loop notices an exit only after its current pass of sampling and guarding, which
    a knob or a policy arm makes longer than EEVDF's.)"""

    def __init__(self, pid: int) -> None:
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except OSError:  # gone already, or a kernel before 5.3
            self._fd = None
            return
        self._thread = threading.Thread(target=self._wait, name="exit-clock", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        assert self._fd is not None
        procstat.raise_priority()  # on time under any arm, as the guard is
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.5)
            if ready:
                self.at = time.monotonic()
                return

    def close(self) -> float | None:
        """The exit's monotonic time (None when it was not seen)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return self.at


class ProgressWatch:
    """Finds runnable threads of a process tree that got no CPU, sample by sample.

    With the observer, a sample asks its task iterator which tasks wait right now and
    for how long, and the tree's threads are the observer's group (children join it at
    fork; the tree is listed again every ``_REDISCOVER`` samples). Without it, every
    thread's state and run time are read from procfs at every sample.
    """

    _REDISCOVER = 10

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.threads: dict[int, _ThreadTrack] = {}
        self._observer = observer.shared()
        self._key = ("bench", tuple(roots))
        self._samples = 0
        self._group = 0

    def _tgids(self) -> list[int]:
        tgids: set[int] = set()
        for root in self.roots:
            with contextlib.suppress(TargetGone):
                tgids.update(partial.process_tree(root))
        return sorted(tgids)

    def _threads(self) -> list[tuple[int, int]]:
        return partial.threads_of(self._tgids())

    def close(self) -> None:
        """Stop watching the tree (the observer stays attached for the next run)."""
        if self._observer is not None:
            self._observer.forget(self._key)

    def sample(self, now: float) -> None:
        if self._observer is not None:
            self._sample_observer()
            return
        for pid, tid in self._threads():
            read = procstat.read_thread_state(pid, tid)
            if read is None:
                continue
            state, run_ns = read
            track = self.threads.get(tid)
            if track is None:
                self.threads[tid] = _ThreadTrack(run_ns, state)
                continue
            if state == "R" and track.state == "R" and run_ns == track.run_ns:
                track.stuck_since = track.stuck_since or now
                track.worst_stall_s = max(track.worst_stall_s, now - track.stuck_since)
            else:
                track.stuck_since = None
            track.run_ns, track.state = run_ns, state

    def _sample_observer(self) -> None:
        assert self._observer is not None
        if self._samples % self._REDISCOVER == 0:
            self._group = self._observer.watch(self._key, self._tgids())
        self._samples += 1
        for tid in self._observer.threads(self._group):
            self.threads.setdefault(tid, _ThreadTrack(0, "?"))
        for wait in self._observer.waiting_now():
            track = self.threads.get(wait.tid)
            if track is not None:
                track.worst_stall_s = max(track.worst_stall_s, wait.wait_ns / 1e9)

    @property
    def worst_stall_s(self) -> float:
        return max((t.worst_stall_s for t in self.threads.values()), default=0.0)


def run_once(
    wl: Workload,
    variables: dict[str, str],
    session: PolicySession | None,
    record: RunRecord,
    with_background: bool = True,
    stall_s: float = STALL_S,
) -> RunRecord:
    """One run: background up, command to completion under watch, background down."""
    background = None
    if wl.spec.background and with_background:
        background = subprocess.Popen(
            wl.argv(wl.spec.background, variables),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(0.5)  # let the hogs spread over the CPUs first
    started = time.monotonic()
    proc = subprocess.Popen(
        wl.argv(wl.spec.command, variables),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    roots = [proc.pid] + ([background.pid] if background else [])
    exit_clock = ExitClock(proc.pid)
    watch = ProgressWatch(roots)
    try:
        if session is not None:
            session.set_targets([proc.pid])
            if background is not None and isinstance(session, OthersAware):
                session.set_others([background.pid])
        out_chunks = _wait_watching(proc, watch, session, record, wl.spec.timeout_s, started)
    finally:
        watch.close()
        # the command's own run time: from its start to its exit, not to when the loop
        # saw it, nor to the background's slow stop
        command_s = (exit_clock.close() or time.monotonic()) - started
        if proc.poll() is None:
            stop_tree(proc, signal.SIGKILL, grace_s=5.0)
        if background is not None:
            stop_tree(background, signal.SIGINT, grace_s=10.0)
    record.wall_s = time.monotonic() - started
    record.threads_seen = len(watch.threads)
    record.worst_stall_ms = round(watch.worst_stall_s * 1000, 1)
    if watch.worst_stall_s >= stall_s:
        stuck = max(watch.threads.items(), key=lambda kv: kv[1].worst_stall_s)[0]
        record.invalidate(
            f"thread {stuck} was runnable for {watch.worst_stall_s:.1f} s "
            "without getting a CPU (starved)"
        )
    stdout, stderr = out_chunks
    if proc.returncode not in (0, None) and record.valid:
        record.invalidate(
            f"the command exited with {proc.returncode}: {(stderr or stdout).strip()[-300:]}"
        )
    if record.valid:
        try:
            record.metrics = extract_metrics(
                wl, stdout + stderr, variables, with_background, command_s
            )
            record.work_done = extract_work_done(wl, stdout + stderr, variables)
        except ExtractError as err:
            record.invalidate(f"could not read the output: {err}")
    return record


def _wait_watching(
    proc: subprocess.Popen[str],
    watch: ProgressWatch,
    session: PolicySession | None,
    record: RunRecord,
    timeout_s: float,
    started: float,
) -> tuple[str, str]:
    while True:
        try:
            return proc.communicate(timeout=_SAMPLE_S)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        watch.sample(now)
        problem = session.problem() if session is not None else None
        if problem is not None:
            record.invalidate(f"the scheduler left during the run: {problem}")
            stop_tree(proc, signal.SIGKILL, grace_s=5.0)
        elif now - started > timeout_s:
            record.invalidate(f"timed out after {timeout_s:.0f} s")
            stop_tree(proc, signal.SIGKILL, grace_s=5.0)


@dataclass(slots=True)
class MetricComparison:
    """One metric of one arm against the baseline."""

    metric: str
    unit: str
    direction: str
    baseline_median: float
    candidate_median: float
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    floor_median: float | None = None

    @property
    def distance_from_floor(self) -> float | None:
        if self.floor_median is None:
            return None
        return self.candidate_median - self.floor_median


@dataclass(slots=True)
class ArmResult:
    """One arm at one level: its runs, its comparisons and its verdict."""

    arm: str
    level: str
    valid_runs: int
    invalid_runs: int
    verdict: ArmVerdict
    reason: str
    comparisons: list[MetricComparison] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class BenchResult:
    """Everything one ``bench run`` or one workload of ``bench suite`` measured."""

    workload: str
    slo_class: str
    primary_metric: str
    baseline: str
    confidence: float
    runs_per_arm: int
    quick: bool
    seed: int
    kernel: str = field(default_factory=lambda: os.uname().release)
    arms: list[ArmResult] = field(default_factory=list)
    #: per level: the baseline's and (latency workloads) the idle floor's medians
    baseline_medians: dict[str, dict[str, float]] = field(default_factory=dict)
    floor_medians: dict[str, dict[str, float]] = field(default_factory=dict)
    records: list[RunRecord] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        for arm_data, arm in zip(data["arms"], self.arms, strict=True):
            for cmp_data, cmp in zip(arm_data["comparisons"], arm.comparisons, strict=True):
                cmp_data["distance_from_floor"] = cmp.distance_from_floor
        return data


def _medians(records: list[RunRecord]) -> dict[str, float]:
    by_metric: dict[str, list[float]] = collections.defaultdict(list)
    for r in records:
        for k, v in r.metrics.items():
            by_metric[k].append(v)
    return {k: statistics.median(v) for k, v in by_metric.items()}


def judge(
    wl: Workload,
    level: str,
    arm: str,
    base: list[RunRecord],
    cand: list[RunRecord],
    floor: list[RunRecord],
    confidence: float,
) -> ArmResult:
    """Compare one arm's valid runs with the baseline's on every metric."""
    valid = [r for r in cand if r.valid]
    base_valid = [r for r in base if r.valid]
    result = ArmResult(
        arm, level, len(valid), len(cand) - len(valid), "invalid", "", medians=_medians(valid)
    )
    if len(valid) < 2 or len(base_valid) < 2:
        reasons = sorted({r.invalid_reason or "" for r in [*cand, *base] if not r.valid})
        result.reason = (
            f"{len(valid)} valid runs against {len(base_valid)} baseline runs; "
            f"need 2 each. {'; '.join(reasons)[:400]}"
        )
        return result
    floor_med = _medians([r for r in floor if r.valid])
    for m in wl.spec.metrics:
        b = [r.metrics[m.name] for r in base_valid if m.name in r.metrics]
        c = [r.metrics[m.name] for r in valid if m.name in r.metrics]
        if len(b) < 2 or len(c) < 2:
            continue
        cmp = stats.compare(b, c, m.direction, confidence)
        result.comparisons.append(
            MetricComparison(
                m.name,
                m.unit,
                m.direction,
                cmp.baseline_median,
                cmp.candidate_median,
                cmp.ratio,
                cmp.ci_low,
                cmp.ci_high,
                cmp.p_value,
                cmp.verdict,
                floor_med.get(m.name),
            )
        )
    primary = next((c for c in result.comparisons if c.metric == wl.spec.primary.name), None)
    if primary is None:
        result.reason = f"the primary metric {wl.spec.primary.name} was not measured"
        return result
    result.verdict = primary.verdict  # type: ignore[assignment]
    result.reason = (
        f"{primary.metric}: median {primary.candidate_median:.4g} vs "
        f"{primary.baseline_median:.4g} {primary.unit}, ratio {primary.ratio:.3f} "
        f"[{primary.ci_low:.3f}, {primary.ci_high:.3f}], p={primary.p_value:.3g}"
    )
    return result


def _check_work_done(records: list[RunRecord], baseline: str) -> None:
    """Invalidate runs whose work-done count differs from the baseline's usual count."""
    counts: collections.Counter[str | None] = collections.Counter(
        r.work_done for r in records if r.valid and r.arm == baseline and r.work_done is not None
    )
    if not counts:
        counts = collections.Counter(r.work_done for r in records if r.valid)
    if not counts:
        return
    expected = counts.most_common(1)[0][0]
    for r in records:
        if r.valid and r.work_done != expected:
            r.invalidate(f"work done {r.work_done!r} differs from the baseline's {expected!r}")


@contextlib.contextmanager
def _tmpdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="schedagent-bench-") as d:
        yield Path(d)


def compare_arms(
    wl: Workload,
    arms: list[Arm],
    sessions: SessionFactory,
    runs: int = 5,
    *,
    baseline: Arm | None = None,
    quick: bool = False,
    seed: int = 0,
    confidence: float = 0.95,
    warmup: bool = True,
    levels: list[str] | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Run every arm ``runs`` times per level, interleaved, and judge each against baseline."""
    if runs < 2:
        raise ValueError(f"--runs must be at least 2 for a comparison, got {runs}")
    baseline = baseline or Arm(None)
    # the same scheduler on both sides is an A/A run: keep both arms, tell them apart
    everyone = [
        baseline,
        *[replace(a, tag="'") if a.label == baseline.label else a for a in arms],
    ]
    if len({a.label for a in everyone}) != len(everyone):
        raise ValueError(f"arms must differ: {[a.label for a in everyone]}")
    if wl.spec.latency and wl.spec.background:
        everyone.append(Arm(None, floor=True))
    binary = build(wl)
    result = BenchResult(
        wl.name,
        wl.spec.slo_class,
        wl.spec.primary.name,
        baseline.label,
        confidence,
        runs,
        quick,
        seed,
    )
    rng = random.Random(seed)
    levels = levels or wl.level_names()
    total = len(levels) * len(everyone) * (runs + int(warmup))
    done = 0
    started = time.monotonic()
    for level in levels:
        rounds = [list(everyone)] if warmup else []
        for _ in range(runs):
            order = list(everyone)
            rng.shuffle(order)
            rounds.append(order)
        level_records: list[RunRecord] = []
        for index, order in enumerate(rounds):
            is_warmup = warmup and index == 0
            for arm in order:
                if progress is not None:
                    progress(
                        f"{wl.name}/{level} {arm.label}{' (warm-up)' if is_warmup else ''}",
                        done,
                        total,
                    )
                rec = RunRecord(arm.label, level, index, is_warmup)
                with _tmpdir() as tmp:
                    variables = wl.variables(level, quick, tmp, binary)
                    try:
                        with sessions(arm) as session:
                            run_once(wl, variables, session, rec, with_background=not arm.floor)
                    except Exception as err:
                        log.warning("%s run of %s failed", arm.label, wl.name, exc_info=True)
                        rec.invalidate(f"{type(err).__name__}: {err}")
                level_records.append(rec)
                done += 1
        measured = [r for r in level_records if not r.warmup]
        _check_work_done([r for r in measured if r.arm != FLOOR], baseline.label)
        result.records += level_records
        by_arm: dict[str, list[RunRecord]] = collections.defaultdict(list)
        for r in measured:
            by_arm[r.arm].append(r)
        floor_runs = by_arm[FLOOR]
        if wl.spec.latency and not wl.spec.background and baseline.policy is None:
            floor_runs = by_arm[baseline.label]  # it already runs alone on an idle system
        for arm in everyone:
            if arm.label == baseline.label or arm.floor:
                continue
            result.arms.append(
                judge(
                    wl,
                    level,
                    arm.label,
                    by_arm[baseline.label],
                    by_arm[arm.label],
                    floor_runs,
                    confidence,
                )
            )
        result.baseline_medians[level] = _medians([r for r in by_arm[baseline.label] if r.valid])
        result.floor_medians[level] = _medians([r for r in floor_runs if r.valid])
    if progress is not None:
        progress(f"{wl.name} done", total, total)
    result.wall_s = time.monotonic() - started
    return result
