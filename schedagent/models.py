"""The value types every layer shares: targets, samples, profiles, SLOs and tune budgets.

Nothing here touches the system. The kernel side fills these in, the reasoning side
reads them, and the front ends print them; keeping them apart from all three is what
lets ``agent/`` and ``profile/`` be tested without a kernel.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schedagent.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Target:
    """What to move: a pid (with threads and children) or a cgroup path."""

    pid: int | None = None
    cgroup: str | None = None

    def describe(self) -> str:
        """Short text for logs and reports."""
        return f"pid {self.pid}" if self.pid is not None else f"cgroup {self.cgroup}"


@dataclass(frozen=True, slots=True)
class ThreadSample:
    """One thread's cumulative counters at one instant."""

    tid: int
    tgid: int
    run_ns: int  # /proc/.../schedstat field 1: time on CPU
    wait_ns: int  # field 2: time runnable but waiting (run_delay)
    slices: int  # field 3: timeslices run
    voluntary: int  # voluntary_ctxt_switches
    involuntary: int  # nonvoluntary_ctxt_switches
    at: float = 0.0  # time.monotonic() when read


@dataclass(frozen=True, slots=True)
class SystemSample:
    """Whole-system counters at one instant."""

    loadavg_1m: float
    procs_running: int
    psi_cpu_some_us: int | None
    psi_mem_some_us: int | None
    psi_io_some_us: int | None


@dataclass(frozen=True, slots=True)
class Topology:
    """CPUs, SMT, LLC and NUMA domains."""

    cpus: int
    smt: bool
    llc_domains: int
    numa_nodes: int


@dataclass(slots=True)
class Window:
    """What was seen of a target over one observation window."""

    def reaped_unseen_ns(self) -> int:
        """CPU of the target's children that came and went between passes, unseen.

        The target's processes reaped children worth ``reaped`` ns in the window: each
        reaped child's own CPU plus what it had reaped itself (its cutime). A child that
        was watched and then reaped is in that figure with its whole lifetime's CPU, which
        its threads' own counters already cover, and with its cutime, which its own rise
        in cutime (it is a reaper here too) and its children's counters cover: both are
        taken off. Taking off only the first counted a job's grandchildren twice: a shell
        loop of ``perf bench sched messaging`` measured 3.8 CPUs on 2 (issue 13).
        """
        reaped = sum(
            last - self.reaped_first.get(tgid, last) for tgid, last in self.reaped_last.items()
        )
        gone = self.tgids_exited - self.tgids_last  # exited and reaped, not still zombies
        watched = sum(t.run_ns for t in self.last.values() if t.tgid in gone)
        watched += sum(self.reaped_last.get(tgid, 0) for tgid in gone)
        return max(0, reaped - watched)

    duration_s: float
    first: dict[int, ThreadSample] = field(default_factory=dict)
    last: dict[int, ThreadSample] = field(default_factory=dict)
    tids_seen: set[int] = field(default_factory=set)
    tgids_seen: set[int] = field(default_factory=set)
    tgids_exited: set[int] = field(default_factory=set)
    #: the target's processes at the last pass (zombies included)
    tgids_last: set[int] = field(default_factory=set)
    max_threads: int = 0
    #: per tgid: CPU time (ns) of its children that it reaped, at first and last sight
    reaped_first: dict[int, int] = field(default_factory=dict)
    reaped_last: dict[int, int] = field(default_factory=dict)
    target_exited: bool = False
    system_start: SystemSample | None = None
    system_end: SystemSample | None = None


WorkloadClass = Literal[
    "latency-critical", "interactive", "messaging", "throughput", "batch", "io-bound", "mixed"
]
Direction = Literal["<=", ">=", "min", "max"]


@dataclass(frozen=True, slots=True)
class Slo:
    """A service-level objective: metric, direction and target value."""

    metric: str
    direction: Direction
    target: float | None
    unit: str
    reason: str
    source: Literal["inferred", "explicit"] = "inferred"

    def describe(self) -> str:
        """``p99_wakeup_latency <= 2000 us`` / ``maximise completed_ops_per_s``."""
        if self.direction in ("min", "max"):
            verb = "minimise" if self.direction == "min" else "maximise"
            return f"{verb} {self.metric} ({self.unit})"
        return f"{self.metric} {self.direction} {self.target:g} {self.unit}"


@dataclass(frozen=True, slots=True)
class Features:
    """The quantified behaviour a class is decided from."""

    cpu_util: float  # CPUs used by the target on average
    max_thread_util: float  # busiest thread, fraction of one CPU
    busy_threads: int  # threads above 80 % of a CPU
    threads: int  # most threads seen at once
    wakeups_per_s: float  # voluntary context switches per second
    preemptions_per_s: float  # involuntary context switches per second
    avg_burst_us: float  # CPU time per timeslice
    avg_wait_us: float  # runqueue wait per timeslice
    wait_ratio: float  # waiting / (waiting + running)
    processes_seen: int
    processes_exited: int
    sleeper_threads: int  # threads that wake often and run briefly
    system_cpus: int
    system_load: float
    psi_cpu_some_pct: float | None
    psi_io_some_pct: float | None


@dataclass(frozen=True, slots=True)
class WorkloadProfile:
    """What the workload is, why we think so, and what it needs."""

    workload_class: WorkloadClass
    confidence: float
    features: Features
    slo: Slo
    rationale: str
    target: str
    duration_s: float
    target_exited: bool = False

    def to_json(self) -> dict[str, object]:
        """JSON-ready dict, with ``class`` as the key name."""
        data = asdict(self)
        data["class"] = data.pop("workload_class")
        return data

    @staticmethod
    def from_json(data: dict[str, object]) -> WorkloadProfile:
        """The inverse of ``to_json`` (profiles kept in reports and the store)."""
        d = dict(data)
        feats, slo = d.pop("features"), d.pop("slo")
        assert isinstance(feats, dict) and isinstance(slo, dict)
        d["workload_class"] = d.pop("class")
        return WorkloadProfile(features=Features(**feats), slo=Slo(**slo), **d)  # type: ignore[arg-type]


_SLO = re.compile(
    r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op><=|>=)\s*(?P<value>[\d.]+)\s*"
    r"(?P<unit>us|µs|ms|s|ns|ops/s|%)?\s*$"
)
_TO_US = {"ns": 0.001, "us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_slo(text: str) -> Slo:
    """``"p99_latency<=2ms"`` -> an explicit Slo (latencies are kept in µs)."""
    match = _SLO.match(text)
    if not match:
        raise ConfigError(
            f"--slo {text!r}: expected METRIC<=VALUE[UNIT] or METRIC>=VALUE, "
            "e.g. p99_latency<=2ms or ops_per_s>=5000"
        )
    value, unit = float(match["value"]), match["unit"] or ""
    if unit in _TO_US:
        value, unit = value * _TO_US[unit], "us"
    op: Direction = "<=" if match["op"] == "<=" else ">="
    return Slo(match["metric"], op, value, unit, "given explicitly", "explicit")


class TuneBudget(BaseModel):
    """How much one tune may spend. The CLI's options, the daemon's ``budgets:`` and
    ``TuneRequest`` all take their defaults and bounds from here."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    budget_s: float = Field(default=600.0, ge=10, le=86_400, description="Wall-time budget (s).")
    max_evals: int = Field(default=36, ge=1, le=1000, description="Most candidate windows.")
    observe_s: float = Field(default=5.0, ge=0.5, le=600, description="Seconds of profiling.")
    window_s: float = Field(default=2.0, ge=0.5, le=600, description="Seconds per A/B window.")
    rounds: int = Field(default=4, ge=2, le=50, description="A/B window pairs per candidate.")
    canary_s: float = Field(default=1.0, ge=0, le=60, description="Seconds of partial-mode canary.")
    max_candidates: int = Field(
        default=3, ge=1, le=10, description="Repository policies the planner proposes."
    )
    max_knobs: int = Field(
        default=3,
        ge=0,
        le=6,
        description="EEVDF knobs (nice, slice, SCHED_FIFO) tried before the policies; 0: none.",
    )


# --- what the execution port returns to reasoning (``agent/port.py``) ----------------------


@dataclass(frozen=True, slots=True)
class LiveMetric:
    """What a tune window measures for one SLO."""

    name: str
    unit: str
    direction: Literal["lower", "higher"]
    explains: str

    def value(self, f: Features) -> float:
        """The value from the window's features (io and p99 metrics are read apart)."""
        if self.name == "runq_wait_us":
            return f.avg_wait_us
        if self.name == "jobs_per_s":
            raise ValueError("jobs_per_s is counted from the window, not its features")
        return f.cpu_util


@dataclass(frozen=True, slots=True)
class Sample:
    """One window's value, with the features it came from."""

    value: float
    features: Features
    target_exited: bool
    #: why the window cannot count (too few wakeups for a p99), else None
    invalid: str | None = None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """A candidate that passed every gate up to the kernel verifier."""

    policy: str
    ops_name: str
    source: str
    source_hash: str
    object_path: str
    object_cached: bool
    tunables: dict[str, int]
    rodata: list[str]
    gates: list[str]


@dataclass(frozen=True, slots=True)
class PolicyDraft:
    """A scheduler the model wrote: its ``policy.yaml`` text and its BPF C source, to be
    staged where the gates and the repository can find it (nothing is compiled yet)."""

    name: str
    policy_yaml: str
    source: str


# --- the model's caps (``--agent anthropic``) ----------------------------------------------


class ModelBudget(BaseModel):
    """Hard caps on one ``--agent anthropic`` run; the ``tune`` operation takes its model
    budget options, defaults and bounds from here."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_usd: float = Field(3.0, ge=0.01, le=1000, description="Model cost cap (USD).")
    max_tool_calls: int = Field(30, ge=1, le=500, description="Model tool-call cap.")
    max_tokens: int = Field(300_000, ge=1000, le=10_000_000, description="Model token cap.")


@dataclass(frozen=True, slots=True)
class WaitTotals:
    """A target's runqueue wait over one window, summed over its threads (schedstat)."""

    wait_ns: int
    slices: int
    duration_s: float

    @property
    def mean_wait_us(self) -> float:
        """Mean wait per timeslice; 0 when the target ran no timeslice."""
        return self.wait_ns / 1000 / self.slices if self.slices else 0.0


# --- bcc probe histograms (filled by kernel/bccprobes.py, printed by every front end) --------


def log2_edges(i: int) -> tuple[int, int]:
    """bcc's ``bpf_log2l(v)`` is floor(log2 v) + 1 (and 1 for v = 0): bucket 1 holds
    [0, 2), bucket i > 1 holds [2^(i-1), 2^i); bucket 0 stays empty."""
    return (0, 2**i) if i <= 1 else (2 ** (i - 1), 2**i)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A log2 histogram as bcc fills it: see ``log2_edges`` for the bucket bounds."""

    unit: str
    buckets: list[int]

    def percentile(self, q: float) -> float:
        """Upper edge (µs) of the bucket holding the q-th percentile."""
        total = sum(self.buckets)
        if not total:
            return 0.0
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= q / 100 * total:
                return float(log2_edges(i)[1])
        return float(log2_edges(len(self.buckets))[1])

    def render(self, width: int = 40) -> str:
        """A terminal histogram, one line per non-empty bucket."""
        top = max(self.buckets, default=0)
        lines = []
        for i, n in enumerate(self.buckets):
            if n:
                lo, hi = log2_edges(i)
                bar = "#" * max(1, round(width * n / top))
                lines.append(f"  {lo:>8}-{hi - 1:<8} {self.unit} {n:>8} {bar}")
        return "\n".join(lines) or "  (no events)"


FINE_SLOTS = 256


def fine_edges(slot: int) -> tuple[int, int]:
    """[low, high) in µs of one ``wake_fine`` slot (the layout is in schedlat.bcc.c)."""
    if slot < 8:
        return slot, slot + 1
    octave, sub = 3 + (slot - 8) // 8, (slot - 8) % 8
    return (8 + sub) << (octave - 3), (9 + sub) << (octave - 3)


@dataclass(frozen=True, slots=True)
class FineHistogram:
    """Wakeup latency counts in log-linear slots (8 per power of two, so within 12.5%)."""

    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        """All events counted."""
        return sum(self.counts)

    def minus(self, earlier: FineHistogram) -> FineHistogram:
        """The events between two snapshots of the same running counters."""
        return FineHistogram(tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True)))

    def percentile(self, q: float) -> float:
        """The q-th percentile in µs, interpolated linearly inside its slot."""
        total = self.total
        if not total:
            return 0.0
        rank = q / 100 * total
        seen = 0
        for slot, n in enumerate(self.counts):
            if n and seen + n >= rank:
                lo, hi = fine_edges(slot)
                return lo + (hi - lo) * (rank - seen) / n
            seen += n
        return float(fine_edges(len(self.counts) - 1)[1])


@dataclass(frozen=True, slots=True)
class DeepReport:
    """What the bcc probes saw over one window, and what they cost."""

    attach_points: tuple[str, ...]
    wakeup_latency: Histogram
    #: the same wakeups in log-linear slots: percentiles within 12.5%
    wakeup_fine: FineHistogram
    burst: Histogram
    wakeups: int
    migrations: int
    duration_s: float
    probe_run_ns: int
    probe_events: int

    @property
    def overhead_pct_of_one_cpu(self) -> float:
        """The probe programs' own run time as a share of one CPU over the window."""
        return 100.0 * self.probe_run_ns / (self.duration_s * 1e9)


# --- EEVDF's own knobs: what an administrator tries before a BPF scheduler ---------------------

KnobKind = Literal["nice", "slice", "fifo", "rr", "others-batch", "others-idle"]
#: the custom slice EEVDF honours through sched_setattr's sched_runtime (Linux 6.12+)
SLICE_MIN_NS, SLICE_MAX_NS = 100_000, 100_000_000
_KNOB = re.compile(r"^(?P<kind>nice|slice|fifo|rr|others-batch|others-idle)(?::(?P<value>[^:]+))?$")
_SLICE_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000}
KNOB_HELP = (
    "nice:N (-20..19), slice:T (100us..100ms, EEVDF's custom slice), fifo:P or rr:P "
    "(SCHED_FIFO/SCHED_RR priority 1..99, under the kernel's RT throttle), others-batch or "
    "others-idle (the workload's background load to SCHED_BATCH/SCHED_IDLE)"
)


@dataclass(frozen=True, slots=True)
class Knob:
    """One EEVDF knob and its value: ``nice:-10``, ``slice:1ms``, ``fifo:1``, ``others-idle``.

    ``nice``, ``slice``, ``fifo`` and ``rr`` act on the target's threads; the ``others-``
    kinds act on everything else the workload runs (its background load)."""

    kind: KnobKind
    value: int = 0

    @property
    def on_others(self) -> bool:
        """Whether it acts on the other tasks (the background), not the target."""
        return self.kind.startswith("others-")

    @property
    def label(self) -> str:
        """The spec it was parsed from, normalised (``slice`` in µs or ms)."""
        if self.on_others:
            return self.kind
        if self.kind == "slice":
            ms, us = divmod(self.value, 1_000_000)
            return f"slice:{ms}ms" if not us else f"slice:{self.value // 1000}us"
        return f"{self.kind}:{self.value}"

    @staticmethod
    def is_label(spec: str) -> bool:
        """Whether ``spec`` names an EEVDF knob (``nice:-10``), not a policy (``fifo``)."""
        try:
            Knob.parse(spec)
        except ConfigError:
            return False
        return True

    @staticmethod
    def parse(spec: str) -> Knob:
        """``nice:-10`` -> Knob("nice", -10); a ConfigError says what was expected."""
        match = _KNOB.match(spec.strip())
        if match is None:
            raise ConfigError(f"knob {spec!r}: expected one of {KNOB_HELP}")
        kind: KnobKind = match["kind"]  # type: ignore[assignment]  # the regex's alternatives
        text = match["value"]
        if kind.startswith("others-"):
            if text is not None:
                raise ConfigError(f"knob {spec!r}: {kind} takes no value")
            return Knob(kind)
        if text is None:
            raise ConfigError(f"knob {spec!r}: {kind} needs a value, e.g. {_EXAMPLE[kind]}")
        value = _knob_value(spec, kind, text)
        lo, hi = _KNOB_RANGE[kind]
        if not lo <= value <= hi:
            raise ConfigError(f"knob {spec!r}: {kind} must be in [{lo}, {hi}]; {KNOB_HELP}")
        return Knob(kind, value)


#: how intrusive each kind of intervention is, least first. A knob changes one service's
#: threads and survives a daemon crash; the background knobs change others' threads; an RT
#: class can take all but the RT throttle's 5% from everyone else; a sched_ext policy in
#: partial mode moves the target's threads to BPF; one for the whole system replaces the
#: scheduler of every task.
INTRUSIVENESS: dict[str, int] = {
    "nice": 1,
    "slice": 1,
    "others-batch": 2,
    "others-idle": 2,
    "fifo": 3,
    "rr": 3,
    "partial": 4,
    "policy": 5,
}

_EXAMPLE = {"nice": "nice:-10", "slice": "slice:1ms", "fifo": "fifo:1", "rr": "rr:1"}
_KNOB_RANGE = {
    "nice": (-20, 19),
    "slice": (SLICE_MIN_NS, SLICE_MAX_NS),
    "fifo": (1, 99),
    "rr": (1, 99),
}


def _knob_value(spec: str, kind: str, text: str) -> int:
    if kind == "slice":
        m = re.fullmatch(r"(\d+)(ns|us|ms)?", text)
        if m is None:
            raise ConfigError(f"knob {spec!r}: a slice is N[ns|us|ms], e.g. slice:1ms")
        return int(m[1]) * _SLICE_UNITS[m[2] or "ns"]
    try:
        return int(text)
    except ValueError as err:
        raise ConfigError(f"knob {spec!r}: {kind} takes an integer, e.g. {_EXAMPLE[kind]}") from err


#: the knobs ``bench suite`` sets beside every policy: renice, real-time, a shorter slice
PEER_KNOBS = ("nice:-10", "fifo:1", "slice:1ms")
