"""``schedagent tune``: find a scheduler that beats EEVDF for one workload, or keep EEVDF."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from schedagent import services
from schedagent.agent.llm import Budget
from schedagent.agent.tune import TuneReport, TuneRequest
from schedagent.cli.bench import ProgressBar
from schedagent.cli.output import emit_json, fail
from schedagent.errors import ConfigError
from schedagent.kernel import partial
from schedagent.models import Target, TuneBudget

_B = TuneBudget()


def budget_option(name: str) -> typer.models.OptionInfo:
    """A ``--name`` option whose bounds and help are ``TuneBudget``'s, declared once."""
    spec = TuneBudget.model_fields[name]
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in spec.metadata}
    return typer.Option(min=bounds.get("Ge"), max=bounds.get("Le"), help=spec.description)


def tune(
    pid: Annotated[int | None, typer.Argument(help="Target pid (with threads and children).")]
    = None,
    cgroup: Annotated[str | None, typer.Option(help="Target cgroup (v2 path).")] = None,
    slo: Annotated[str | None, typer.Option(help="Explicit SLO, e.g. p99_latency<=2ms; "
                                            "overrides the inferred one.")] = None,
    agent: Annotated[str, typer.Option(help="offline (default, no network) or anthropic.")]
    = "offline",
    budget_s: Annotated[float, budget_option("budget_s")] = _B.budget_s,
    max_evals: Annotated[int, budget_option("max_evals")] = _B.max_evals,
    rounds: Annotated[int, budget_option("rounds")] = _B.rounds,
    window_s: Annotated[float, budget_option("window_s")] = _B.window_s,
    observe_s: Annotated[float, budget_option("observe_s")] = _B.observe_s,
    model: Annotated[str | None, typer.Option(help="Model for --agent anthropic (default "
                                              "$SCHEDAGENT_MODEL or the built-in default).")]
    = None,
    max_usd: Annotated[float, typer.Option(min=0.01, max=1000, help="Model cost cap (USD).")]
    = 3.0,
    max_tool_calls: Annotated[int, typer.Option(min=1, max=500, help="Model tool-call cap.")]
    = 30,
    max_tokens: Annotated[int, typer.Option(min=1000, max=10_000_000, help="Model token cap.")]
    = 300_000,
    latency_log: Annotated[str | None, typer.Option(
        help="The target's access log: one request per line ending in its latency in us. "
             "Windows are then judged on the p99 of the latencies logged in them.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Propose and gate candidates only.")] = False,
    keep: Annotated[bool, typer.Option(help="Hold a winning policy until Ctrl-C.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Profile a workload, try policies live against EEVDF, keep only a proven winner."""
    try:
        if (pid is None) == (cgroup is None):
            raise ConfigError("pass exactly one target: a PID argument or --cgroup PATH")
        if agent not in ("offline", "anthropic"):
            raise ConfigError(f"--agent {agent!r}: expected offline or anthropic")
        chosen: Literal["offline", "anthropic"] = "offline" if agent == "offline" else "anthropic"
        target = Target(pid=pid, cgroup=cgroup)
        req = TuneRequest(target, chosen, dry_run=dry_run, model=model, latency_log=latency_log,
                          budget=TuneBudget(budget_s=budget_s, max_evals=max_evals,
                                            rounds=rounds, window_s=window_s,
                                            observe_s=observe_s))
        budget = Budget(max_tool_calls, max_tokens, max_usd)
        report = services.tune(req, slo, ProgressBar(enabled=True), budget)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(report.to_json())
    else:
        _print(report)
    if keep and report.decision is not None and report.decision.policy != "eevdf":
        _hold(report, target)


def _print(report: TuneReport) -> None:
    prof = report.profile
    print(f"target    {report.target}")
    print(f"profile   {prof['class']} (confidence {float(prof['confidence']):.0%}): "  # type: ignore[arg-type]
          f"{prof['rationale']}")
    print(f"SLO       {report.slo}")
    print(f"measured  {report.metric['name']} ({report.metric['unit']}, "
          f"{report.metric['direction']} is better): {report.metric['explains']}")
    base = report.baseline_samples
    if base:
        print(f"EEVDF     {len(base)} windows, median {sorted(base)[len(base) // 2]:.4g}")
    print("candidates:")
    for t in report.trials:
        if t.ratio is not None and t.ci is not None:
            detail = (f"{t.verdict}: ratio {t.ratio:.3f} [{t.ci[0]:.3f}, {t.ci[1]:.3f}] "
                      f"p={t.p_value:.3g}, {len(t.samples)} windows")
        else:
            detail = t.error or t.status
        print(f"  {t.label:<34} {detail}")
        c = t.confirmation
        if c is not None:
            shown = (f"ratio {c.ratio:.3f} [{c.ci[0]:.3f}, {c.ci[1]:.3f}] p={c.p_value:.3g}, "
                     if c.ratio is not None and c.ci is not None and c.p_value is not None
                     else "")
            print(f"  {'':<34} confirmation: {c.verdict}: {shown}{len(c.samples)} fresh windows "
                  f"against {len(c.baseline_samples)} EEVDF")
        print(f"  {'':<34} why tried: {t.reason}")
    d = report.decision
    assert d is not None
    print(f"decision  {d.policy}{' ' + str(d.tunables) if d.tunables else ''}: {d.why}")
    if report.ended not in ("complete", "dry-run"):
        print(f"ended     {report.ended}: {report.end_note}")
    if report.skipped_windows:
        print(f"skipped   {len(report.skipped_windows)} windows not compared "
              f"(first: {report.skipped_windows[0]})")
    print(f"cost      {report.evaluations} evaluations in {report.wall_s:.0f} s "
          f"(compiles and gates {report.compile_s:.0f} s, measuring {report.measure_s:.0f} s); "
          "the system is back on EEVDF")
    if report.cost:
        c = report.cost
        print(f"model     {c['requests']} requests, {c['tool_calls']} tool calls, "
              f"{c['input_tokens']} input + {c['output_tokens']} output tokens "
              f"({c['cache_read_tokens']} read from the prompt cache), ${c['usd']}")
    if d.reapply:
        print(f"re-apply  {d.reapply}")


def _hold(report: TuneReport, target: Target) -> None:
    from schedagent.execution.engine import RunRequest

    d = report.decision
    assert d is not None
    print(f"keeping {d.policy} on the system until Ctrl-C")
    try:
        outcome = services.run_policy(RunRequest(d.policy, d.tunables, target, None,
                                                 switch_all=True, actor="tune --keep"))
    except Exception as err:  # noqa: BLE001
        fail(err)
    print(f"{d.policy} ended ({outcome.reason}); sched_ext is {outcome.final_state}")
