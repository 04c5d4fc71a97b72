"""The WorkloadProfile value and the SLO it carries."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

from schedagent.errors import ConfigError

WorkloadClass = Literal["latency-critical", "interactive", "messaging", "throughput", "batch",
                        "io-bound", "mixed"]
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

    cpu_util: float              # CPUs used by the target on average
    max_thread_util: float       # busiest thread, fraction of one CPU
    busy_threads: int            # threads above 80 % of a CPU
    threads: int                 # most threads seen at once
    wakeups_per_s: float         # voluntary context switches per second
    preemptions_per_s: float     # involuntary context switches per second
    avg_burst_us: float          # CPU time per timeslice
    avg_wait_us: float           # runqueue wait per timeslice
    wait_ratio: float            # waiting / (waiting + running)
    processes_seen: int
    processes_exited: int
    sleeper_threads: int         # threads that wake often and run briefly
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


_SLO = re.compile(r"^\s*(?P<metric>[a-z0-9_]+)\s*(?P<op><=|>=)\s*(?P<value>[\d.]+)\s*"
                  r"(?P<unit>us|µs|ms|s|ns|ops/s|%)?\s*$")
_TO_US = {"ns": 0.001, "us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_slo(text: str) -> Slo:
    """``"p99_latency<=2ms"`` -> an explicit Slo (latencies are kept in µs)."""
    match = _SLO.match(text)
    if not match:
        raise ConfigError(f"--slo {text!r}: expected METRIC<=VALUE[UNIT] or METRIC>=VALUE, "
                          "e.g. p99_latency<=2ms or ops_per_s>=5000")
    value, unit = float(match["value"]), match["unit"] or ""
    if unit in _TO_US:
        value, unit = value * _TO_US[unit], "us"
    op = match["op"]
    assert op in ("<=", ">=")
    return Slo(match["metric"], op, value, unit, "given explicitly", "explicit")
