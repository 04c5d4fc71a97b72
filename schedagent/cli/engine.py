"""``schedagent policies verify|load|unquarantine``, ``status`` and ``rollback``."""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated, NoReturn

import typer

from schedagent import services
from schedagent.execution import engine
from schedagent.cli.output import emit_json, fail
from schedagent.errors import ConfigError
from schedagent.kernel import partial
from schedagent.policy.repo import parse_overrides
from schedagent.models import Target

policies_app = typer.Typer(help="Verify, load and inspect sched_ext policies.",
                           no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Tunable KEY=VALUE (repeat).")]


def _sigterm_to_interrupt(_sig: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


@policies_app.command("verify")
def verify(policy: Annotated[str, typer.Argument(help="Policy name or path to a .bpf.c.")],
           set_: SetOpt = None, json_out: JsonOpt = False) -> None:
    """Run the gates up to the kernel verifier (static gate, clang, load) without attaching."""
    try:
        result = services.verify_policy(policy, parse_overrides(set_ or []))
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json({"ok": True, **vars_of(result)})
        return
    print(f"{result.policy}: passed {', '.join(result.gates)}")
    print(f"  ops name   {result.ops_name}")
    print(f"  object     {result.object_path}{' (cached)' if result.object_cached else ''}")
    print(f"  tunables   {result.tunables or '(none)'}")


@policies_app.command("prebuild")
def prebuild(json_out: JsonOpt = False) -> None:
    """Prepare vmlinux.h and compile every built-in policy for this kernel, ahead of need.

    The daemon does this when it starts and the testbed image carries the result, so
    that no tune waits on clang beside the load it is tuning.
    """
    try:
        report = services.prebuild(None if json_out else print)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(report)
    if report.failed:
        raise SystemExit(12)  # the exit code of a compile error


def vars_of(obj: object) -> dict[str, object]:
    """A dataclass's fields as a dict (for JSON output)."""
    from schedagent.cli.output import to_jsonable

    out = to_jsonable(obj)
    assert isinstance(out, dict)
    return out


@policies_app.command("load")
def load(
    policy: Annotated[str, typer.Argument(help="Policy name or path to a .bpf.c.")],
    set_: SetOpt = None,
    pid: Annotated[int | None, typer.Option(help="Canary: switch only this pid "
                                            "(threads and children) to SCHED_EXT.")] = None,
    cgroup: Annotated[str | None, typer.Option(help="Canary: switch only this cgroup.")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Seconds; default until "
                                                   "Ctrl-C.")] = None,
    timeout_ms: Annotated[int | None, typer.Option(min=100, max=30000,
                                                   help="Kernel watchdog timeout.")] = None,
    switch_all: Annotated[bool, typer.Option(
        "--switch-all", help="With --pid/--cgroup: run every task on the policy and use the "
        "target only for the policy's target map (no canary).")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Attach a policy with the guard on until the duration ends or Ctrl-C, then restore."""
    if pid is not None and cgroup is not None:
        fail(ConfigError("pass --pid or --cgroup, not both"), json_out)
    target = Target(pid=pid, cgroup=cgroup) if (pid or cgroup) else None
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)

    def attached(outcome: engine.RunOutcome) -> None:
        if not json_out:
            scope = f"partial, {outcome.switched_threads} threads of {outcome.target}" \
                if outcome.target else "all tasks"
            until = f"for {duration:g} s" if duration else "until Ctrl-C"
            print(f"{outcome.ops_name} enabled (enable_seq {outcome.enable_seq}, {scope}); "
                  f"guard on {until}", file=sys.stderr, flush=True)

    try:
        req = engine.RunRequest(policy, parse_overrides(set_ or []), target, duration, timeout_ms,
                                switch_all=switch_all)
        outcome = services.run_policy(req, attached)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    event = outcome.guard_event
    if json_out:
        data = vars_of(outcome)
        data["ok"] = outcome.ok
        if event is not None:
            data["guard"] = {"reason": event.reason(),
                             "detection_latency_ms": event.detection_latency_ms}
            if event.exit_info is not None:
                data["exit_kind"] = event.exit_info.kind
                data["exit_kind_name"] = event.exit_info.kind_name
                data["kernel_message"] = event.exit_info.message or event.exit_info.reason
        emit_json(data)
    else:
        print(f"{outcome.ops_name}: ran {outcome.ran_s:.1f} s, ended by {outcome.reason}; "
              f"state now {outcome.final_state}")
        if event is not None:
            print(f"  guard: {event.reason()}")
            for line in event.kernel_log[-5:]:
                print(f"  kernel: {line}")
        if outcome.switched_threads:
            print(f"  restored {outcome.restored_threads}/{outcome.switched_threads} threads")
    if not outcome.ok:
        raise typer.Exit(24 if outcome.reason == "ejected" else 26)


@policies_app.command("list")
def list_(json_out: JsonOpt = False) -> None:
    """List the built-in policies: summary, good fit, status and win/loss history."""
    rows = services.list_policies()
    if json_out:
        emit_json(rows)
        return
    for row in rows:
        wins = sum(h["wins"] for h in row.history.values())
        losses = sum(h["losses"] for h in row.history.values())
        print(f"{row.name:<10} {row.status:<12} good for {', '.join(row.good_for) or '-':<32} "
              f"{wins}W/{losses}L")
        print(f"{'':10} {row.summary}")


@policies_app.command("show")
def show(policy: Annotated[str, typer.Argument(help="Policy name.")],
         json_out: JsonOpt = False) -> None:
    """Show a policy's metadata and tunables, and its live counters when it is active."""
    try:
        detail = services.show_policy(policy)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(detail)
        return
    meta = detail.meta
    print(f"{detail.name}: {meta.get('summary', '(no policy.yaml)')}")
    print(f"  source   {detail.source}")
    for key in ("intent", "good_for", "bad_for", "status", "requires"):
        if key in meta:
            print(f"  {key:<8} {meta[key]}")
    tunables = meta.get("tunables", {})
    assert isinstance(tunables, dict)
    for key, spec in tunables.items():
        print(f"  tunable  {key} = {spec['default']} {spec['unit']} "
              f"[{spec['min']}, {spec['max']}]: {spec['description']}")
    if detail.active:
        print(f"  ACTIVE, counters ({detail.stats_age_s} s old): {detail.live_stats}")
    else:
        print("  not active")


@policies_app.command("unquarantine")
def unquarantine(policy: Annotated[str, typer.Argument(help="Policy name.")],
                 json_out: JsonOpt = False) -> None:
    """Allow a quarantined policy to load again."""
    removed = services.unquarantine(policy)
    if json_out:
        emit_json({"policy": policy, "removed": removed})
    else:
        print(f"{policy}: removed {removed} quarantine entries")


def status(json_out: JsonOpt = False) -> None:
    """Show sched_ext state, the policy schedagent has loaded, quarantine and recent events."""
    report = services.status()
    if json_out:
        emit_json(vars_of(report))
        return
    snap = report.sched_ext
    if not snap.present:
        print("sched_ext: absent on this kernel (the system runs EEVDF); see `schedagent doctor`")
    else:
        print(f"sched_ext: {snap.state}" + (f", root/ops={snap.ops}" if snap.ops else "")
              + f", enable_seq={snap.enable_seq}, switch_all={int(snap.switch_all)}")
    if report.active is not None:
        rec = report.active
        alive = "alive" if report.owner_alive else "dead"
        print(f"active: {rec.policy} (owner pid {rec.owner_pid}, {alive}), "
              f"target {rec.target or 'all'}, tunables {rec.tunables}")
    else:
        print("active: none (EEVDF)" if not snap.is_enabled else
              f"active: {snap.ops} (not loaded by schedagent)")
    for q in report.quarantine:
        print(f"quarantined: {q.policy} ({q.reason})")
    for ev in report.events[-5:]:
        print(f"event {time.strftime('%H:%M:%S', time.localtime(ev.ts))} {ev.kind} "
              f"{ev.policy or ''} {ev.detail}")


def rollback(json_out: JsonOpt = False) -> None:
    """Detach schedagent's active policy and return to EEVDF (escalating if needed)."""
    from schedagent.cli.daemon import daemon_client

    try:
        client = daemon_client()
        if client is not None:
            # the daemon holds its policies in process: ask it, rather than signal it
            released = client.call("rollback", {})
            if json_out:
                emit_json(released)
            else:
                print(f"rollback: the daemon released {released['released'] or 'nothing'}; "
                      f"sched_ext {released['sched_ext']}")
            return
        result = services.rollback()
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(vars_of(result))
    else:
        print(f"rollback: {result.action}; state {result.state_before} -> {result.state_after}"
              + (f"; {result.note}" if result.note else ""))
