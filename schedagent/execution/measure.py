"""Live measurement of a running target on its SLO metric, window by window.

``tune`` cannot rerun a stranger's workload, so it watches it: alternate windows
under EEVDF and under a candidate give interleaved samples of the same metric.

- with ``--latency-log PATH`` (any SLO): the p99 of the request latencies the
  target appended to its access log during the window. This is the client's own
  latency, the most direct measure there is; each line's last number is read as
  one request's latency in µs.
- latency SLOs: the p99 wakeup-to-run latency of the target's threads in the
  window (µs, lower is better), from the observer's in-kernel histogram
  (``kernel/observer.py``: attached once per process, its object cached per kernel),
  else from the bcc probe compiled for the run. Without either, the fallback is the
  mean runqueue wait per timeslice, and the metric's ``explains`` says so. The
  fallback is coarser: a policy that hands out fewer, longer slices raises wait per
  slice while it shortens requests.
- throughput SLOs: CPUs the target used (higher is better);
- makespan SLOs (job sets: a loop or a build whose processes come and go): the target's
  processes that finished per second (higher is better). Completed work, not CPU
  consumed: "CPU time the target got" rises for a policy that makes the jobs spin, and
  a job set's CPU time is where exited children were double counted (issue 13).

Every window is checked against physical bounds (``physical_problem``): CPUs used at
most the machine's CPUs, rates and latencies not negative, values finite. A window
that breaks them is invalid: it is reported and never compared.
- messaging completion time: bytes the target's processes read and wrote per
  second (``/proc/PID/io`` rchar + wchar, higher is better): messages moved,
  however a scheduler batches them. Voluntary switches per second, used before,
  fell 7-16x under policies that finish perf's messaging 3x sooner, because a
  receiver that runs longer reads more messages per wakeup.

Windows (``_watch``) come from the observer's maps: two reads of one map per window,
where procfs polling read every thread's files ten times a second. Without the
observer they come from procfs polling. The daemon's guard measures the same
counters (``metric_for``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path
from typing import Protocol, Self

from schedagent.errors import ConfigError, FeatureMissing, TargetGone
from schedagent.kernel import bccprobes, observer, partial, procstat
from schedagent.models import Features, LiveMetric, Sample, Slo, Target, Window, WorkloadProfile
from schedagent.profile.classify import build_profile, features_from_window

#: a window with fewer wakeups (or logged requests) than this has no meaningful p99
#: and is not counted
MIN_WAKEUPS = 20


def wants_probe(slo: Slo) -> bool:
    """Whether a ``Meter`` for this SLO attaches the bcc probe (latency SLOs do)."""
    return "latency" in slo.metric or slo.unit == "us"


def has_observer() -> bool:
    """Whether windows and the p99 come from the observer in this process."""
    return observer.shared() is not None


def p99_metric(slo: Slo) -> LiveMetric:
    return LiveMetric(
        "p99_wakeup_us",
        "us",
        "lower",
        f"{slo.metric} is measured live as the p99 wakeup-to-run latency of the "
        "target's threads in each window (BPF on sched_wakeup and sched_switch)",
    )


def metric_for(slo: Slo) -> LiveMetric:
    """The cheap live counter (schedstat, procfs) that stands for an SLO metric."""
    if wants_probe(slo):
        return LiveMetric(
            "runq_wait_us",
            "us",
            "lower",
            f"{slo.metric} is measured live as the target's mean runqueue wait "
            "per timeslice (schedstat), the part of latency a scheduler decides",
        )
    if slo.metric == "completion_time":
        return LiveMetric(
            "io_bytes_per_s",
            "B/s",
            "higher",
            "messaging completion time is measured live as the bytes the target's "
            "processes read and wrote per second (/proc/PID/io rchar + wchar): "
            "messages moved, however they are batched",
        )
    if slo.metric == "makespan":
        return LiveMetric(
            "jobs_per_s",
            "jobs/s",
            "higher",
            "makespan is measured live as the target's processes that finished "
            "per second (completed jobs, not the CPU they consumed)",
        )
    return LiveMetric(
        "cpus_used",
        "CPUs",
        "higher",
        f"{slo.metric} is measured live as the CPU time the target got per second",
    )


#: CPUs used may exceed the CPU count by this share before a window is impossible:
#: schedstat and tick-based child times are read at slightly different instants
CPU_SLACK = 1.05


def physical_problem(metric: LiveMetric, value: float, feats: Features) -> str | None:
    """Why a window's value cannot be physically true, or None when it can be.

    CPUs used (by the metric or in the window's own accounting) at most the machine's
    CPUs; rates, counts and latencies at least 0 (the floor); every value finite.
    """
    if not math.isfinite(value):
        return f"{metric.name} is {value}: not a finite number"
    if value < 0:
        return f"{metric.name} {value:.4g} {metric.unit} is below 0, its physical floor"
    cpus = max(feats.system_cpus, 1)
    if feats.cpu_util > cpus * CPU_SLACK:
        return (
            f"the target used {feats.cpu_util:.3f} CPUs on a {cpus}-CPU machine: the "
            "window's CPU accounting is impossible"
        )
    return None


class GuardMeter(Protocol):
    """What the daemon's guard measures with: one metric, window by window."""

    metric: LiveMetric

    def measure(self, window_s: float) -> Sample: ...


def io_bytes(target: Target) -> dict[int, int]:
    """rchar + wchar of each of the target's processes (all its threads), now."""
    totals: dict[int, int] = {}
    try:
        tgids = partial.target_tgids(target)
    except TargetGone:
        return totals
    for tgid in tgids:
        moved = procstat.read_io_bytes(tgid)
        if moved is not None:  # else it exited meanwhile
            totals[tgid] = moved
    return totals


def _watch(target: Target, window_s: float) -> tuple[Window, Features]:
    """One observation window and its features (TargetGone if it is gone at the start)."""
    window = observer.observe(target, window_s)
    return window, features_from_window(window, procstat.read_topology())


def profile(target: Target, duration_s: float, slo: Slo | None = None) -> WorkloadProfile:
    """Observe the target for ``duration_s`` and classify it; ``slo`` given, else inferred
    (TargetGone if it is gone at the start)."""
    window = observer.observe(target, duration_s)
    return build_profile(window, procstat.read_topology(), target.describe(), slo)


def measure(target: Target, metric: LiveMetric, window_s: float) -> Sample:
    """Watch the target for one window (raises TargetGone if it is gone at the start)."""
    io_start = io_bytes(target) if metric.name == "io_bytes_per_s" else {}
    window, feats = _watch(target, window_s)
    if metric.name == "jobs_per_s":
        value = len(window.tgids_exited) / max(window.duration_s, 1e-3)
    elif metric.name == "io_bytes_per_s":
        # processes alive at both ends; one that came or went in between is not counted
        io_end = io_bytes(target)
        moved = sum(io_end[t] - io_start[t] for t in io_start.keys() & io_end.keys())
        value = moved / max(window.duration_s, 1e-3)
    else:
        value = metric.value(feats)
    return Sample(value, feats, window.target_exited, physical_problem(metric, value, feats))


#: the most of an access log read per window: a flood beyond it keeps its newest lines
MAX_LOG_BYTES_PER_WINDOW = 16 << 20
_LAST_NUMBER = re.compile(rb"(\d+(?:\.\d+)?)\s*$")


def request_p99_metric(path: Path) -> LiveMetric:
    return LiveMetric(
        "p99_request_us",
        "us",
        "lower",
        f"the p99 of the request latencies the target logged to {path} in each "
        "window (the last number of each new line, in µs)",
    )


def planned_metric(slo: Slo, latency_log: str | None) -> LiveMetric:
    """What a ``Meter`` would measure, without attaching anything (for --dry-run)."""
    if latency_log is not None:
        return request_p99_metric(Path(latency_log))
    if wants_probe(slo) and (observer.shared() is not None or bccprobes.bcc_available()):
        return p99_metric(slo)
    return metric_for(slo)


def check_latency_log(path: str | os.PathLike[str]) -> Path:
    """The access log as a readable regular file, or a ConfigError saying what to pass."""
    log = Path(path)
    if not log.is_file() or not os.access(log, os.R_OK):
        raise ConfigError(
            f"--latency-log {log}: not a readable file. Expected the target's "
            "access log, one request per line ending in its latency in µs "
            "(for example wakelat -l PATH); start the target with it first"
        )
    return log


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class LatencyLog:
    """Reads the request latencies appended to an access log since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size  # only what is logged from now on counts
        self.malformed = 0

    def take(self) -> list[float]:
        """Latencies (µs) of the whole lines appended since the last call."""
        try:
            size = self.path.stat().st_size
        except OSError:  # removed mid-run: the window has no requests
            return []
        if size < self.offset:  # rotated or truncated: start again at its beginning
            self.offset = 0
        # a flood is cut to its newest MAX_LOG_BYTES_PER_WINDOW, from a line start
        start = max(self.offset, size - MAX_LOG_BYTES_PER_WINDOW)
        try:
            with self.path.open("rb") as fh:
                fh.seek(start)
                chunk = fh.read(size - start)
        except OSError:
            return []
        if start > self.offset:
            cut = chunk.find(b"\n") + 1
            chunk, start = chunk[cut:], start + cut
        whole = chunk[: chunk.rfind(b"\n") + 1]  # a half-written last line waits
        self.offset = start + len(whole)
        values = []
        for line in whole.splitlines():
            m = _LAST_NUMBER.search(line)
            if m is None:
                self.malformed += bool(line.strip())
                continue
            values.append(float(m.group(1)))
        return values


class Meter:
    """Measures one target's SLO metric window after window, for one tune run.

    Use as a context manager: for a latency SLO it reads the observer's wait
    histogram (the process's observer, attached at its first use), else it compiles
    and attaches the bcc probe on entry (about a minute under emulation) and detaches
    it on exit. With neither, or ``deep`` False, it measures the cheap counter.
    """

    def __init__(
        self,
        target: Target,
        slo: Slo,
        deep: bool = True,
        latency_log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.target, self.slo = target, slo
        self.metric = metric_for(slo)
        self.fallback_note: str | None = None
        self._log_path = None if latency_log is None else check_latency_log(latency_log)
        self._log: LatencyLog | None = None
        self._want_probe = deep and wants_probe(slo) and self._log_path is None
        self._probe: bccprobes.Probe | None = None
        self._observer: observer.Observer | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        if self._log_path is not None:
            self._log = LatencyLog(self._log_path)
            self.metric = request_p99_metric(self._log_path)
        if not self._want_probe:
            return self
        self._observer = observer.shared()
        if self._observer is not None:
            self.metric = p99_metric(self.slo)
            return self
        try:
            self._probe = self._stack.enter_context(bccprobes.attached())
        except FeatureMissing as err:
            self.fallback_note = f"no p99 probe (bcc: {err.observed}); {self.metric.explains}"
        except Exception as err:  # noqa: BLE001  # bcc raises bare Exception on compile errors
            self.fallback_note = (
                f"the p99 probe did not attach ({str(err)[:200]}); {self.metric.explains}"
            )
        if self.fallback_note is not None:
            self.metric = LiveMetric(
                self.metric.name, self.metric.unit, self.metric.direction, self.fallback_note
            )
            return self
        self.metric = p99_metric(self.slo)
        return self

    def __exit__(self, *exc: object) -> None:
        self._probe = self._observer = None
        self._stack.close()

    def measure(self, window_s: float) -> Sample:
        """Watch the target for one window (raises TargetGone if it is gone at the start)."""
        if self._log is not None:
            self._log.take()  # what was logged before this window belongs to no one
            window, feats = _watch(self.target, window_s)
            values = self._log.take()
            p99 = percentile(values, 99)
            invalid = (
                None
                if len(values) >= MIN_WAKEUPS
                else f"{len(values)} requests logged in the window, fewer than {MIN_WAKEUPS}"
            )
            invalid = invalid or physical_problem(self.metric, p99, feats)
            return Sample(p99, feats, window.target_exited, invalid)
        if self._observer is not None:
            # the window watches the same group: its children join it at fork
            group = self._observer.watch(self.target, partial.target_tgids(self.target))
            before = self._observer.wait_hist(group)
            window, feats = _watch(self.target, window_s)
            hist = self._observer.wait_hist(group).minus(before)
        elif self._probe is None:
            return measure(self.target, self.metric, window_s)
        else:
            # threads and children started since the last window join the probe's targets
            self._probe.add_targets(partial.target_tgids(self.target))
            before = self._probe.wake_fine()
            window, feats = _watch(self.target, window_s)
            hist = self._probe.wake_fine().minus(before)
        p99 = hist.percentile(99)
        invalid = (
            None
            if hist.total >= MIN_WAKEUPS
            else f"{hist.total} wakeups in the window, fewer than {MIN_WAKEUPS}"
        )
        if min(hist.counts) < 0:  # the group was taken for another target meanwhile
            invalid = "the wait histogram was reset during the window"
        invalid = invalid or physical_problem(self.metric, p99, feats)
        return Sample(p99, feats, window.target_exited, invalid)


def guard_meter(target: Target, slo: Slo, latency_log: str | None) -> Meter:
    """The daemon guard's meter: the access log's p99 when there is one (cheap: it reads
    a file), else tune's own p99 wakeup latency from the observer's histogram when the
    observer runs here (cheap too: a map read), else the cheap counter for the SLO
    (``metric_for``). No bcc probe is attached, so nothing needs releasing; it is
    returned ready to measure."""
    return Meter(target, slo, deep=has_observer(), latency_log=latency_log).__enter__()
