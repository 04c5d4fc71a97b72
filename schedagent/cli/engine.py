"""``schedagent policies verify|load|list|show|prebuild|unquarantine``, ``status``, ``rollback``."""

from __future__ import annotations

import signal
import time
from typing import Annotated, Any, NoReturn

import typer

from schedagent.cli.common import JsonOpt, args, client, spec_option
from schedagent.cli.output import emit_json, fail
from schedagent.opspec import RunArgs
from schedagent.policy.repo import parse_overrides

policies_app = typer.Typer(
    help="Verify, load and inspect sched_ext policies.", no_args_is_help=True
)

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Tunable KEY=VALUE (repeat).")]


def _sigterm_to_interrupt(_sig: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


@policies_app.command("verify")
def verify(
    policy: Annotated[str, typer.Argument(help="Policy name or path to a .bpf.c.")],
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Run the gates up to the kernel verifier (static gate, clang, load) without attaching."""
    try:
        result = client(json_out).call(
            "verify_path", {"policy": policy, "tunables": parse_overrides(set_ or [])}
        )
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(result)
        return
    print(f"{result['policy']}: passed {', '.join(result['gates'])}")
    print(f"  ops name   {result['ops_name']}")
    print(f"  object     {result['object_path']}{' (cached)' if result['object_cached'] else ''}")
    print(f"  tunables   {result['tunables'] or '(none)'}")
    print(f"  artifact   {result['artifact_id']} (what load_policy, hold_policy and bench take)")


@policies_app.command("prebuild")
def prebuild(json_out: JsonOpt = False) -> None:
    """Prepare vmlinux.h and compile every built-in policy for this kernel, ahead of need.

    The daemon does this when it starts and the testbed image carries the result, so
    that no tune waits on clang beside the load it is tuning.
    """
    try:
        report = client(json_out).call("prebuild", {})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(report)
    if report["failed"]:
        raise SystemExit(12)  # the exit code of a compile error


@policies_app.command("load")
def load(
    policy: Annotated[str, typer.Argument(help="Policy name or path to a .bpf.c.")],
    set_: SetOpt = None,
    pid: Annotated[
        int | None,
        typer.Option(help="Canary: switch only this pid (threads and children) to SCHED_EXT."),
    ] = None,
    cgroup: Annotated[str | None, typer.Option(help="Canary: switch only this cgroup.")] = None,
    duration: Annotated[float | None, spec_option(RunArgs, "duration_s", "--duration")] = None,
    timeout_ms: Annotated[int | None, spec_option(RunArgs, "timeout_ms")] = None,
    switch_all: Annotated[
        bool,
        typer.Option(
            "--switch-all",
            help="With --pid/--cgroup: run every task on the policy and use the "
            "target only for the policy's target map (no canary).",
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Attach a policy with the guard on until the duration ends or Ctrl-C, then restore."""
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        out = client(json_out).call(
            "run_policy",
            args(
                policy=policy,
                tunables=parse_overrides(set_ or []),
                pid=pid,
                cgroup=cgroup,
                duration_s=duration,
                timeout_ms=timeout_ms,
                switch_all=switch_all,
            ),
        )
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(out)
    else:
        print(
            f"{out['ops_name']}: ran {out['ran_s']:.1f} s, ended by {out['reason']}; "
            f"state now {out['final_state']}"
        )
        if "guard" in out:
            print(f"  guard: {out['guard']['reason']}")
            for line in out["guard_event"]["kernel_log"][-5:]:
                print(f"  kernel: {line}")
        if out["switched_threads"]:
            print(f"  restored {out['restored_threads']}/{out['switched_threads']} threads")
    if not out["ok"]:
        raise typer.Exit(24 if out["reason"] == "ejected" else 26)


@policies_app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List the built-in policies: summary, good fit, status and win/loss history."""
    try:
        rows = client(json_out).call("list_policies", {})["policies"]
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(rows)
        return
    for row in rows:
        wins = sum(h["wins"] for h in row["history"].values())
        losses = sum(h["losses"] for h in row["history"].values())
        print(
            f"{row['name']:<10} {row['status']:<12} good for "
            f"{', '.join(row['good_for']) or '-':<32} {wins}W/{losses}L"
        )
        print(f"{'':10} {row['summary']}")


@policies_app.command("show")
def show(
    policy: Annotated[str, typer.Argument(help="Policy name.")], json_out: JsonOpt = False
) -> None:
    """Show a policy's metadata and tunables, and its live counters when it is active."""
    try:
        detail = client(json_out).call("show_policy", {"name": policy})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(detail)
        return
    meta = detail["meta"]
    print(f"{detail['name']}: {meta.get('summary', '(no policy.yaml)')}")
    print(f"  source   {detail['source']}")
    for key in ("intent", "good_for", "bad_for", "status", "requires"):
        if key in meta:
            print(f"  {key:<8} {meta[key]}")
    for key, spec in meta.get("tunables", {}).items():
        print(
            f"  tunable  {key} = {spec['default']} {spec['unit']} "
            f"[{spec['min']}, {spec['max']}]: {spec['description']}"
        )
    if detail["active"]:
        print(f"  ACTIVE, counters ({detail['stats_age_s']} s old): {detail['live_stats']}")
    else:
        print("  not active")


@policies_app.command("unquarantine")
def unquarantine(
    policy: Annotated[str, typer.Argument(help="Policy name.")], json_out: JsonOpt = False
) -> None:
    """Allow a quarantined policy to load again."""
    try:
        out = client(json_out).call("unquarantine", {"name": policy})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(out)
    else:
        print(f"{policy}: removed {out['removed']} quarantine entries")


def status(json_out: JsonOpt = False) -> None:
    """Show sched_ext state, the policy schedagent has loaded, quarantine and recent events."""
    try:
        c = client(json_out)
        report = c.call("status", {})
        if c.served_by == "daemon":
            report["daemon"] = c.call("daemon_status", {})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(report)
        return
    snap = report["sched_ext"]
    if not snap["present"]:
        print("sched_ext: absent on this kernel (the system runs EEVDF); see `schedagent doctor`")
    else:
        print(
            f"sched_ext: {snap['state']}"
            + (f", root/ops={snap['ops']}" if snap["ops"] else "")
            + f", enable_seq={snap['enable_seq']}, switch_all={int(snap['switch_all'])}"
        )
    rec = report["active"]
    if rec is not None:
        alive = "alive" if report["owner_alive"] else "dead"
        print(
            f"active: {rec['policy']} (owner pid {rec['owner_pid']}, {alive}), "
            f"target {rec['target'] or 'all'}, tunables {rec['tunables']}"
        )
    else:
        print(
            "active: none (EEVDF)"
            if snap["state"] != "enabled"
            else f"active: {snap['ops']} (not loaded by schedagent)"
        )
    for q in report["quarantine"]:
        print(f"quarantined: {q['policy']} ({q['reason']})")
    for ev in report["events"][-5:]:
        print(
            f"event {time.strftime('%H:%M:%S', time.localtime(ev['ts']))} {ev['kind']} "
            f"{ev['policy'] or ''} {ev['detail']}"
        )
    if "daemon" in report:
        _print_daemon(report["daemon"])


def _print_daemon(d: dict[str, Any]) -> None:
    print(
        f"daemon: pid {d['pid']}, mode {d['mode']}, up {d['uptime_s']:.0f} s, "
        f"{d['rollbacks_total']} rollbacks"
    )
    obs = d.get("observer") or {}
    if obs.get("attached"):
        print(
            f"  observer: {obs['cpu_pct_of_one_core']:.3f}% of one core since attach "
            f"({obs['events']} events, {obs['ns_per_event']:.0f} ns each), "
            f"{obs['groups_watched']} groups watched"
        )
    elif obs:
        print(f"  observer: not attached ({obs.get('reason')}); windows read procfs")
    for name, t in d["targets"].items():
        print(f"  target {name}: {t.get('policy')} ({t.get('phase')})")


def rollback(json_out: JsonOpt = False) -> None:
    """Detach schedagent's active policy and return to EEVDF (escalating if needed)."""
    try:
        # a running daemon holds its policies in process: the client asks it, rather than
        # this process signalling it
        result = client(json_out).call("rollback", {})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(result)
    elif "released" in result:
        print(
            f"rollback: the daemon released {result['released'] or 'nothing'}; "
            f"sched_ext {result['sched_ext']}"
        )
    else:
        print(
            f"rollback: {result['action']}; state {result['state_before']} -> "
            f"{result['state_after']}" + (f"; {result['note']}" if result["note"] else "")
        )
