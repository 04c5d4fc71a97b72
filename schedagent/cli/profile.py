"""``schedagent profile``: a workload's class, the features behind it, and its SLO."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from schedagent.cli.common import JsonOpt, args, client, spec_option
from schedagent.cli.output import emit_json, fail
from schedagent.models import Histogram, WorkloadProfile
from schedagent.opspec import ProfileArgs


def profile(
    pid: Annotated[
        int | None, typer.Argument(help="Target pid (with threads and children).")
    ] = None,
    cgroup: Annotated[str | None, typer.Option(help="Target cgroup (v2 path).")] = None,
    duration: Annotated[float, spec_option(ProfileArgs, "duration_s", "--duration")] = 5.0,
    slo: Annotated[str | None, spec_option(ProfileArgs, "slo")] = None,
    deep: Annotated[
        bool,
        typer.Option(
            help="Add bcc histograms of wakeup latency and burst length (needs bcc and root)."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Watch a pid or cgroup and print its workload class, features and SLO."""
    try:
        data = client(json_out).call(
            "profile_workload",
            args(pid=pid, cgroup=cgroup, duration_s=duration, slo=slo, deep=deep),
        )
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(data)
        return
    deep_data = data.pop("deep", None)
    result = WorkloadProfile.from_json(data)
    f = result.features
    print(f"{result.target}: {result.workload_class} (confidence {result.confidence:.0%})")
    print(f"  why      {result.rationale}")
    print(f"  SLO      {result.slo.describe()}  [{result.slo.source}: {result.slo.reason}]")
    print(
        f"  cpu      {f.cpu_util:.2f} CPUs, busiest thread {f.max_thread_util:.0%}, "
        f"{f.busy_threads} busy of {f.threads} threads"
    )
    print(f"  wakeups  {f.wakeups_per_s:.0f}/s voluntary, {f.preemptions_per_s:.0f}/s preempted")
    print(
        f"  bursts   {f.avg_burst_us:.0f} µs on CPU, {f.avg_wait_us:.0f} µs waiting per slice "
        f"({f.wait_ratio:.0%} of runnable time)"
    )
    print(
        f"  system   {f.system_cpus} CPUs, load {f.system_load:.2f}, PSI cpu "
        f"{_pct(f.psi_cpu_some_pct)} io {_pct(f.psi_io_some_pct)}"
    )
    if deep_data is not None:
        _print_deep(deep_data)
    if result.target_exited:
        print(
            f"  note     the target exited after {result.duration_s:.1f} s; this profile "
            "covers only that part"
        )


def _print_deep(rep: dict[str, Any]) -> None:
    if "error" in rep:
        print(f"  deep     unavailable: {rep['error']}")
        return
    lat = rep["wakeup_latency_us"]
    print(
        f"  deep     bcc probes on {', '.join(rep['attach_points'])} for "
        f"{rep['duration_s']:.1f} s: {rep['wakeups']} wakeups, {rep['migrations']} "
        f"migrations; probe overhead {rep['overhead_pct_of_one_cpu']:.2f}% of one CPU "
        f"({rep['probe_events']} events)"
    )
    print(f"  wakeup-to-run latency (p50 {lat['p50']:.0f} µs, p99 {lat['p99']:.0f} µs):")
    print(Histogram(**rep["wakeup_latency"]).render())
    print("  on-CPU burst length:")
    print(Histogram(**rep["burst"]).render())


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"
