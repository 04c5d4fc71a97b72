"""``schedagent profile``: a workload's class, the features behind it, and its SLO."""

from __future__ import annotations

from typing import Annotated

import typer

from schedagent import services
from schedagent.cli.output import emit_json, fail, to_jsonable
from schedagent.errors import ConfigError, SchedagentError
from schedagent.kernel import partial
from schedagent.kernel.bccprobes import DeepReport
from schedagent.models import Target


def profile(
    pid: Annotated[int | None, typer.Argument(help="Target pid (with threads and children).")]
    = None,
    cgroup: Annotated[str | None, typer.Option(help="Target cgroup (v2 path).")] = None,
    duration: Annotated[float, typer.Option(min=0.2, max=3600, help="Seconds to watch.")] = 5.0,
    slo: Annotated[str | None, typer.Option(help="Explicit SLO, e.g. p99_latency<=2ms; "
                                            "overrides the inferred one.")] = None,
    deep: Annotated[bool, typer.Option(help="Add bcc histograms of wakeup latency and burst "
                                       "length (needs bcc and root).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Watch a pid or cgroup and print its workload class, features and SLO."""
    try:
        if (pid is None) == (cgroup is None):
            raise ConfigError("pass exactly one target: a PID argument or --cgroup PATH")
        target = Target(pid=pid, cgroup=cgroup)
        result = services.profile_workload(target, duration, slo)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    deep_report, deep_error = None, None
    if deep:
        try:
            deep_report = services.deep_probe(target, duration)
        except SchedagentError as err:
            deep_error = str(err)  # say so clearly, keep the cheap profile
    if json_out:
        data = result.to_json()
        if deep:
            data["deep"] = to_jsonable(deep_report) if deep_report else {"error": deep_error}
        emit_json(data)
        return
    f = result.features
    print(f"{result.target}: {result.workload_class} (confidence {result.confidence:.0%})")
    print(f"  why      {result.rationale}")
    print(f"  SLO      {result.slo.describe()}  [{result.slo.source}: {result.slo.reason}]")
    print(f"  cpu      {f.cpu_util:.2f} CPUs, busiest thread {f.max_thread_util:.0%}, "
          f"{f.busy_threads} busy of {f.threads} threads")
    print(f"  wakeups  {f.wakeups_per_s:.0f}/s voluntary, {f.preemptions_per_s:.0f}/s preempted")
    print(f"  bursts   {f.avg_burst_us:.0f} µs on CPU, {f.avg_wait_us:.0f} µs waiting per slice "
          f"({f.wait_ratio:.0%} of runnable time)")
    print(f"  system   {f.system_cpus} CPUs, load {f.system_load:.2f}, PSI cpu "
          f"{_pct(f.psi_cpu_some_pct)} io {_pct(f.psi_io_some_pct)}")
    if deep_error:
        print(f"  deep     unavailable: {deep_error}")
    elif deep_report is not None:
        _print_deep(deep_report)
    if result.target_exited:
        print(f"  note     the target exited after {result.duration_s:.1f} s; this profile "
              "covers only that part")


def _print_deep(rep: DeepReport) -> None:
    print(f"  deep     bcc probes on {', '.join(rep.attach_points)} for {rep.duration_s:.1f} s: "
          f"{rep.wakeups} wakeups, {rep.migrations} migrations; probe overhead "
          f"{rep.overhead_pct_of_one_cpu:.2f}% of one CPU ({rep.probe_events} events)")
    print(f"  wakeup-to-run latency (p50 {rep.wakeup_fine.percentile(50):.0f} µs, "
          f"p99 {rep.wakeup_fine.percentile(99):.0f} µs):")
    print(rep.wakeup_latency.render())
    print("  on-CPU burst length:")
    print(rep.burst.render())


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}%"
