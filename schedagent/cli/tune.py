"""``schedagent tune``: find a scheduler that beats EEVDF for one workload, or keep EEVDF.

``--keep`` is ``verify_policy`` and then ``hold_policy`` on the decision, in this process,
so Ctrl-C ends the hold.
"""

from __future__ import annotations

import signal
from typing import Annotated, Any, NoReturn

import typer

from schedagent.agent.planner import Candidate
from schedagent.cli.common import JsonOpt, args, client, spec_option
from schedagent.cli.output import emit_json, fail
from schedagent.models import ModelBudget, TuneBudget
from schedagent.opspec import MAX_HOLD_S, TuneArgs

_B, _M = TuneBudget.model_validate({}), ModelBudget.model_validate({})


def budget_option(name: str) -> Any:
    """A ``--name`` option whose bounds and help are the ``tune`` operation's, declared once
    (``TuneBudget`` and ``ModelBudget`` in ``schedagent.models``)."""
    return spec_option(TuneArgs, name)


def _sigterm_to_interrupt(_sig: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


def tune(
    pid: Annotated[
        int | None, typer.Argument(help="Target pid (with threads and children).")
    ] = None,
    cgroup: Annotated[str | None, typer.Option(help="Target cgroup (v2 path).")] = None,
    slo: Annotated[str | None, budget_option("slo")] = None,
    agent: Annotated[
        str, typer.Option(help="offline (default, no network) or anthropic.")
    ] = "offline",
    budget_s: Annotated[float, budget_option("budget_s")] = _B.budget_s,
    max_evals: Annotated[int, budget_option("max_evals")] = _B.max_evals,
    max_knobs: Annotated[int, budget_option("max_knobs")] = _B.max_knobs,
    rounds: Annotated[int, budget_option("rounds")] = _B.rounds,
    window_s: Annotated[float, budget_option("window_s")] = _B.window_s,
    observe_s: Annotated[float, budget_option("observe_s")] = _B.observe_s,
    model: Annotated[str | None, budget_option("model")] = None,
    max_usd: Annotated[float, budget_option("max_usd")] = _M.max_usd,
    max_tool_calls: Annotated[int, budget_option("max_tool_calls")] = _M.max_tool_calls,
    max_tokens: Annotated[int, budget_option("max_tokens")] = _M.max_tokens,
    latency_log: Annotated[str | None, budget_option("latency_log")] = None,
    others: Annotated[
        list[int] | None,
        typer.Option(
            "--others",
            help="A pid of the competing work (repeatable): tune may then try moving it to "
            "SCHED_BATCH/SCHED_IDLE. Without it, nothing but the target is touched.",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Propose and gate candidates only.")] = False,
    keep: Annotated[
        bool, typer.Option(help="Hold a winning policy on the system until Ctrl-C (at most a day).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Profile a workload, try EEVDF's knobs and policies live against EEVDF, keep only a
    proven winner: the least intrusive that reaches the SLO."""
    try:
        report = client(json_out, steps=True).call(
            "tune",
            args(
                pid=pid,
                cgroup=cgroup,
                slo=slo,
                agent=agent,
                budget_s=budget_s,
                max_evals=max_evals,
                max_knobs=max_knobs,
                rounds=rounds,
                window_s=window_s,
                observe_s=observe_s,
                model=model,
                max_usd=max_usd,
                max_tool_calls=max_tool_calls,
                max_tokens=max_tokens,
                latency_log=latency_log,
                others=others or None,
                dry_run=dry_run,
            ),
        )
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(report)
    else:
        _print(report)
    decision = report["decision"]
    if keep and decision is not None and decision.get("kind") == "knob":
        how = decision["reapply"] or f"schedagent knob {decision['policy']} --duration SECONDS"
        print(
            f"--keep: {decision['policy']} is an EEVDF knob and needs no holder; to keep it, "
            f"run: {how}"
        )
    elif keep and decision is not None and decision["policy"] != "eevdf":
        _hold(decision, pid, cgroup)


def _print(report: dict[str, Any]) -> None:
    prof, metric = report["profile"], report["metric"]
    print(f"target    {report['target']}")
    print(
        f"profile   {prof['class']} (confidence {float(prof['confidence']):.0%}): "
        f"{prof['rationale']}"
    )
    print(f"SLO       {report['slo']}")
    print(
        f"measured  {metric['name']} ({metric['unit']}, {metric['direction']} is better): "
        f"{metric['explains']}"
    )
    base = report["baseline_samples"]
    if base:
        print(f"EEVDF     {len(base)} windows, median {sorted(base)[len(base) // 2]:.4g}")
    print("candidates:")
    for t in report["trials"]:
        _print_trial(t)
    d = report["decision"]
    assert d is not None
    print(f"decision  {d['policy']}{' ' + str(d['tunables']) if d['tunables'] else ''}: {d['why']}")
    if report["ended"] not in ("complete", "dry-run"):
        print(f"ended     {report['ended']}: {report['end_note']}")
    skipped = report["skipped_windows"]
    if skipped:
        print(f"skipped   {len(skipped)} windows not compared (first: {skipped[0]})")
    print(
        f"cost      {report['evaluations']} evaluations in {report['wall_s']:.0f} s "
        f"(compiles and gates {report['compile_s']:.0f} s, first window at "
        f"{report['first_window_s']:.0f} s, measuring {report['measure_s']:.0f} s); "
        "the system is back on EEVDF"
    )
    if report["cost"]:
        c = report["cost"]
        print(
            f"model     {c['requests']} requests, {c['tool_calls']} tool calls, "
            f"{c['input_tokens']} input + {c['output_tokens']} output tokens "
            f"({c['cache_read_tokens']} read from the prompt cache), ${c['usd']}"
        )
    if d["reapply"]:
        print(f"re-apply  {d['reapply']}")


def _print_trial(t: dict[str, Any]) -> None:
    label = Candidate(t["policy"], t["overrides"]).label
    if t["ratio"] is not None and t["ci"] is not None:
        detail = (
            f"{t['verdict']}: ratio {t['ratio']:.3f} [{t['ci'][0]:.3f}, "
            f"{t['ci'][1]:.3f}] p={t['p_value']:.3g}, {len(t['samples'])} windows"
        )
    else:
        detail = t["error"] or t["status"]
    kind = f"{t.get('kind', 'policy')} {t.get('rank', '')}".strip()
    print(f"  {label:<24} {kind:<9} {detail}")
    c = t["confirmation"]
    if c is not None:
        shown = (
            f"ratio {c['ratio']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] p={c['p_value']:.3g}, "
            if c["ratio"] is not None and c["ci"] is not None and c["p_value"] is not None
            else ""
        )
        print(
            f"  {'':<34} confirmation: {c['verdict']}: {shown}{len(c['samples'])} fresh "
            f"windows against {len(c['baseline_samples'])} EEVDF"
        )
    print(f"  {'':<34} why tried: {t['reason']}")
    if t.get("placement"):
        print(f"  {'':<34} ran {t['placement']}")


def _hold(decision: dict[str, Any], pid: int | None, cgroup: str | None) -> None:
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    print(f"keeping {decision['policy']} on the system until Ctrl-C")
    try:
        c = client()
        art = c.call(
            "verify_policy", {"name": decision["policy"], "tunables": decision["tunables"]}
        )["artifact_id"]
        outcome = c.call(
            "hold_policy", args(policy=art, pid=pid, cgroup=cgroup, duration_s=MAX_HOLD_S)
        )
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err)
    print(
        f"{decision['policy']} ended ({outcome['reason']}); sched_ext is {outcome['final_state']}"
    )
