"""``schedagent interventions`` and ``schedagent knob``: EEVDF's knobs beside the policies."""

from __future__ import annotations

import signal
from typing import Annotated, NoReturn

import typer

from schedagent.cli.common import JsonOpt, args, client, spec_option
from schedagent.cli.output import emit_json, fail
from schedagent.opspec import KnobArgs


def _sigterm_to_interrupt(_sig: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


def interventions(json_out: JsonOpt = False) -> None:
    """Every kind of intervention, least intrusive first, and whether this host allows it."""
    try:
        out = client(json_out).call("list_interventions", {})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(out)
        return
    for row in out["interventions"]:
        allowed = "allowed" if row["allowed"] else f"not now: {row['why_not']}"
        print(f"{row['rank']}  {row['kind']:<13} e.g. {row['example']:<10} {allowed}")
        print(f"{'':3}{'changes':<14}{row['changes']}")
        print(f"{'':3}{'undone by':<14}{row['undo']}")
    print(f"policies: {', '.join(out['policies'])}")


def knob(
    spec: Annotated[str, typer.Argument(help="nice:N, slice:T, fifo:P or rr:P.")],
    pid: Annotated[int | None, typer.Option(help="Target pid (threads and children).")] = None,
    cgroup: Annotated[str | None, typer.Option(help="Target cgroup (v2 path).")] = None,
    duration: Annotated[float, spec_option(KnobArgs, "duration_s", "--duration")] = 10.0,
    json_out: JsonOpt = False,
) -> None:
    """Hold an EEVDF knob on a target's threads for a while, then put every thread back."""
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        out = client(json_out).call(
            "load_knob", args(knob=spec, pid=pid, cgroup=cgroup, duration_s=duration)
        )
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(out)
        return
    ended = f"; it stopped holding: {out['problem']}" if out["problem"] else ""
    if out["ended"] in ("released", "cancelled"):
        ended = f"; ended early ({out['ended']})"
    print(
        f"{out['knob']} held on {out['threads']} threads of {out['target']}, "
        f"{out['restored']} put back as they were{ended}"
    )
    for tid, why in out["not_restored"].items():
        print(f"  thread {tid}: {why}")
