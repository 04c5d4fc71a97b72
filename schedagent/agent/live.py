"""Live measurement of a running target on its SLO metric, window by window.

``tune`` cannot rerun a stranger's workload, so it watches it: alternate windows
under EEVDF and under a candidate give interleaved samples of the same metric.
procfs has no per-wakeup record, so each SLO metric is measured through the
closest counter the kernel keeps for the target's threads (schedstat):

- wakeup latency SLOs: mean runqueue wait per timeslice (µs, lower is better);
- throughput and makespan SLOs: CPUs the target used (higher is better);
- messaging completion time: voluntary switches per second, i.e. messages
  handled (higher is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schedagent.kernel import partial, procstat
from schedagent.profile.classify import features_from_window
from schedagent.profile.model import Features, Slo


@dataclass(frozen=True, slots=True)
class LiveMetric:
    """What a tune window measures for one SLO."""

    name: str
    unit: str
    direction: Literal["lower", "higher"]
    explains: str

    def value(self, f: Features) -> float:
        if self.name == "runq_wait_us":
            return f.avg_wait_us
        if self.name == "cpus_used":
            return f.cpu_util
        return f.wakeups_per_s


def metric_for(slo: Slo) -> LiveMetric:
    """The live counter that stands for an SLO metric."""
    if "latency" in slo.metric or slo.unit == "us":
        return LiveMetric("runq_wait_us", "us", "lower",
                          f"{slo.metric} is measured live as the target's mean runqueue wait "
                          "per timeslice (schedstat), the part of latency a scheduler decides")
    if slo.metric == "completion_time":
        return LiveMetric("wakeups_per_s", "1/s", "higher",
                          "messaging completion time is measured live as messages handled per "
                          "second (voluntary context switches of the target)")
    return LiveMetric("cpus_used", "CPUs", "higher",
                      f"{slo.metric} is measured live as the CPU time the target got per second")


@dataclass(frozen=True, slots=True)
class Sample:
    """One window's value, with the features it came from."""

    value: float
    features: Features
    target_exited: bool


def measure(target: partial.Target, metric: LiveMetric, window_s: float) -> Sample:
    """Watch the target for one window (raises TargetGone if it is gone at the start)."""
    window = procstat.observe(target, window_s)
    feats = features_from_window(window, procstat.read_topology())
    return Sample(metric.value(feats), feats, window.target_exited)
