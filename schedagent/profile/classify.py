"""Deterministic rules from observed behaviour to a workload class and an SLO.

Only behaviour counts: CPU use, burst lengths, wakeup and preemption rates,
runqueue waits, process churn and pressure. Process names and command lines are
never read here: they are untrusted text, and a name is not a behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from schedagent.models import Features, Slo, Topology, Window, WorkloadClass, WorkloadProfile

#: A thread above this share of one CPU counts as busy (CPU-bound).
BUSY_UTIL = 0.8
#: A thread that wakes at least this often and runs under SHORT_BURST_US is a sleeper.
SLEEPER_WAKEUPS_PER_S = 20.0
SHORT_BURST_US = 5000.0
#: Messaging is a group of threads that wake each other: at least this many sleepers ...
MESSAGING_MIN_THREADS = 8
#: ... with short bursts: the sleepers' own bound. Bursts are ~20 µs on hardware but far
#: longer under emulation: 255 µs to 2.2 ms for perf's thread mode (2.2 ms in a CI dry run,
#: with 11 sleepers at 301 wakeups/s, when the bound here was 2 ms), 1.3 ms for process mode.
MESSAGING_BURST_US = SHORT_BURST_US
#: ... and at least this many wakeups per second in all. On hardware perf bench sched
#: messaging makes 10^5 and more; under emulation, with 40-80 tasks on 2 vCPUs, 420-1950.
MESSAGING_WAKEUPS_PER_S = 200.0
#: A thread watched for at least this share of the window is judged over the time it was
#: watched (it started or ended mid-window); a shorter view is judged over the whole window.
MIN_VIEW_SHARE = 0.25
#: Processes that finish inside the window mark a job set.
BATCH_MIN_EXITED = 3


def _pct(start: int | None, end: int | None, duration_s: float) -> float | None:
    if start is None or end is None:
        return None
    return 100.0 * (end - start) / (duration_s * 1e6)


def features_from_window(window: Window, topo: Topology) -> Features:
    """Turn one observation window into quantified features."""
    dur = max(window.duration_s, 1e-3)
    run = wait = slices = vol = invol = 0
    busy = sleepers = 0
    max_util = 0.0
    for tid, last in window.last.items():
        first = window.first[tid]
        d_run, d_wait = last.run_ns - first.run_ns, last.wait_ns - first.wait_ns
        d_slices, d_vol = last.slices - first.slices, last.voluntary - first.voluntary
        run, wait, slices = run + d_run, wait + d_wait, slices + d_slices
        vol, invol = vol + d_vol, invol + (last.involuntary - first.involuntary)
        viewed = last.at - first.at
        span = viewed if viewed >= MIN_VIEW_SHARE * dur else dur
        util = d_run / (span * 1e9)
        max_util = max(max_util, util)
        busy += util >= BUSY_UTIL
        burst_us = d_run / 1000 / d_slices if d_slices else 0.0
        sleepers += d_vol / span >= SLEEPER_WAKEUPS_PER_S and burst_us < SHORT_BURST_US
    # short-lived children that started and ended between two passes still used the CPU
    unseen = window.reaped_unseen_ns()
    start, end = window.system_start, window.system_end
    assert start is not None and end is not None  # observe() always sets both
    return Features(
        cpu_util=(run + unseen) / (dur * 1e9),
        max_thread_util=max_util,
        busy_threads=busy,
        threads=window.max_threads,
        wakeups_per_s=vol / dur,
        preemptions_per_s=invol / dur,
        avg_burst_us=run / 1000 / slices if slices else 0.0,
        # a target that waited without running once has waited the whole time, not zero
        avg_wait_us=wait / 1000 / max(slices, 1),
        wait_ratio=wait / (run + wait) if run + wait else 0.0,
        processes_seen=len(window.tgids_seen),
        processes_exited=len(window.tgids_exited),
        sleeper_threads=sleepers,
        system_cpus=topo.cpus,
        system_load=end.loadavg_1m,
        psi_cpu_some_pct=_pct(start.psi_cpu_some_us, end.psi_cpu_some_us, dur),
        psi_io_some_pct=_pct(start.psi_io_some_us, end.psi_io_some_us, dur),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A class, how sure we are, and the rule that decided it."""

    workload_class: WorkloadClass
    confidence: float
    rationale: str


def classify(f: Features) -> Verdict:
    """Apply the rules in order; the first that matches decides."""
    if f.processes_exited >= BATCH_MIN_EXITED and f.cpu_util >= 0.3:
        return Verdict(
            "batch",
            0.8,
            f"{f.processes_exited} of {f.processes_seen} processes "
            f"finished inside the window while using {f.cpu_util:.2f} CPUs: a job set",
        )
    if f.busy_threads and f.sleeper_threads:
        return Verdict(
            "mixed",
            0.7,
            f"{f.busy_threads} CPU-bound and {f.sleeper_threads} "
            "short-burst sleeper threads in the same target",
        )
    if (
        f.wakeups_per_s >= MESSAGING_WAKEUPS_PER_S
        and f.avg_burst_us < MESSAGING_BURST_US
        and f.sleeper_threads >= MESSAGING_MIN_THREADS
    ):
        return Verdict(
            "messaging",
            0.8,
            f"{f.wakeups_per_s:.0f} wakeups/s across "
            f"{f.sleeper_threads} threads with {f.avg_burst_us:.0f} µs bursts: "
            "wakeup-heavy producer/consumer work",
        )
    if f.busy_threads and f.wakeups_per_s < 50 * max(f.threads, 1):
        conf = 0.9 if f.avg_burst_us >= 1000 else 0.7
        return Verdict(
            "throughput",
            conf,
            f"{f.busy_threads} thread(s) above "
            f"{BUSY_UTIL:.0%} of a CPU with {f.avg_burst_us / 1000:.1f} ms bursts "
            "and few wakeups: CPU-bound",
        )
    if (f.psi_io_some_pct or 0) >= 10 and f.cpu_util < 0.3:
        return Verdict(
            "io-bound",
            0.6,
            f"IO pressure {f.psi_io_some_pct:.0f}% and only {f.cpu_util:.2f} CPUs used",
        )
    if f.sleeper_threads:
        rate = f.wakeups_per_s
        if rate >= 100 or f.wait_ratio >= 0.2:
            return Verdict(
                "latency-critical",
                0.75,
                f"{rate:.0f} wakeups/s with "
                f"{f.avg_burst_us:.0f} µs bursts; it waits {f.wait_ratio:.0%} of its "
                "runnable time, so wakeup latency is what it needs",
            )
        return Verdict("interactive", 0.6, f"{rate:.0f} wakeups/s, short bursts, low CPU use")
    if f.cpu_util >= 0.5:
        return Verdict("throughput", 0.5, f"{f.cpu_util:.2f} CPUs used without a clear pattern")
    return Verdict(
        "interactive",
        0.3,
        f"mostly idle ({f.cpu_util:.3f} CPUs, "
        f"{f.wakeups_per_s:.0f} wakeups/s); too little activity to be sure",
    )


def infer_slo(cls: WorkloadClass, f: Features) -> Slo:
    """The SLO a class implies, with the reasoning in one sentence."""
    if cls in ("latency-critical", "interactive", "mixed"):
        # aim for a few bursts' worth of waiting, never tighter than 1 ms
        target = max(1000.0, round(4 * max(f.avg_burst_us, 250.0), -2))
        return Slo(
            "p99_wakeup_latency",
            "<=",
            target,
            "us",
            f"short bursts ({f.avg_burst_us:.0f} µs) after frequent wakeups mean it "
            "waits for the CPU, not for work",
        )
    if cls == "messaging":
        return Slo(
            "completion_time",
            "min",
            None,
            "s",
            "wakeup-heavy message passing finishes sooner when wakeups are served fast",
        )
    if cls == "batch":
        return Slo("makespan", "min", None, "s", "a job set is done when its last job is done")
    if cls == "io-bound":
        return Slo(
            "p99_wakeup_latency",
            "<=",
            5000.0,
            "us",
            "IO-bound work only needs the CPU promptly when its IO completes",
        )
    return Slo(
        "completed_ops_per_s",
        "max",
        None,
        "ops/s",
        "CPU-bound work is measured by how much it gets done",
    )


def build_profile(
    window: Window, topo: Topology, target: str, explicit_slo: Slo | None = None
) -> WorkloadProfile:
    """Features, class and SLO for one window; an explicit SLO overrides the inferred one."""
    feats = features_from_window(window, topo)
    verdict = classify(feats)
    slo = explicit_slo or infer_slo(verdict.workload_class, feats)
    return WorkloadProfile(
        verdict.workload_class,
        verdict.confidence,
        feats,
        slo,
        verdict.rationale,
        target,
        window.duration_s,
        window.target_exited,
    )


@dataclass(frozen=True, slots=True)
class PhaseChange:
    """The target's behaviour changed materially between two profiles."""

    before: WorkloadClass
    after: WorkloadClass
    reason: str


def detect_phase_change(old: WorkloadProfile, new: WorkloadProfile) -> PhaseChange | None:
    """A class change, or a large jump in CPU use or wakeup rate, is a phase change."""
    a, b = old.features, new.features
    if old.workload_class != new.workload_class:
        return PhaseChange(
            old.workload_class,
            new.workload_class,
            f"class {old.workload_class} -> {new.workload_class}",
        )
    if abs(b.cpu_util - a.cpu_util) >= 0.3 and (
        max(a.cpu_util, b.cpu_util) >= 3 * min(a.cpu_util, b.cpu_util)
    ):
        return PhaseChange(
            old.workload_class,
            new.workload_class,
            f"CPU use {a.cpu_util:.2f} -> {b.cpu_util:.2f} CPUs",
        )
    low, high = sorted((a.wakeups_per_s, b.wakeups_per_s))
    if high >= 100 and high >= 5 * max(low, 1.0):
        return PhaseChange(
            old.workload_class,
            new.workload_class,
            f"wakeups {a.wakeups_per_s:.0f} -> {b.wakeups_per_s:.0f}/s",
        )
    return None


def material_change(ref: WorkloadProfile, features: Features) -> PhaseChange | None:
    """A large jump in CPU use or wakeup rate from ``ref``'s behaviour to ``features``.

    Class labels are left out: near a rule boundary they flip from window to window.
    """
    return detect_phase_change(ref, replace(ref, features=features))
