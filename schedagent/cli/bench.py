"""``schedagent bench``: workloads, A/B runs against EEVDF, and the whole suite.

The ``benchmark`` and ``bench_suite`` operations write the JSON record, the markdown
table and the plots under the state directory whichever front end runs them; the
options here only copy those files where the user asks.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from schedagent.cli.common import JsonOpt, args, client, spec_option
from schedagent.cli.output import emit_json, fail
from schedagent.models import KNOB_HELP, PEER_KNOBS
from schedagent.opspec import BenchArgs, SuiteArgs
from schedagent.policy.repo import parse_overrides

app = typer.Typer(
    help="Benchmark workloads under policies, A/B against EEVDF in one boot.", no_args_is_help=True
)


def _copy(src: str, dest: Path) -> str:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest)


def _copies(
    out: dict[str, Any],
    md: Path | None,
    plot: Path | None,
    plot_dir: Path | None,
    out_dir: Path | None,
) -> list[str]:
    """The recorded files, plus copies where the options ask for them."""
    written = list(out["written"])
    if out_dir is not None:
        written.append(_copy(out["record"], out_dir / Path(out["record"]).name))
    if md is not None:
        written.append(_copy(out["markdown"], md))
    plots: dict[str, str] = out["plots"]
    if plot is not None:
        if not plots:
            raise FileNotFoundError(
                f"no plot was drawn, so none can be written to {plot}; see the warning in the log"
            )
        written.append(_copy(next(iter(plots.values())), plot))
    if plot_dir is not None:
        written += [_copy(path, plot_dir / f"{workload}.png") for workload, path in plots.items()]
    return written


@app.command("list")
def list_cmd(json_out: JsonOpt = False) -> None:
    """The built-in workloads: what they run, their metric and SLO class."""
    try:
        items = client(json_out).call("list_workloads", {})["workloads"]
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(items)
        return
    for w in items:
        print(f"{w['name']:<11} {w['slo_class']:<17} {w['primary_metric']}")
        print(f"{'':<11} {w['summary']}")
        if w["levels"] != ["default"]:
            print(f"{'':<11} levels: {', '.join(w['levels'])}")


@app.command("run")
def run_cmd(
    workload: Annotated[str, typer.Argument(help="A workload name (see `bench list`).")],
    policy: Annotated[
        list[str],
        typer.Option(
            help="Policy or artifact_id to compare (repeatable); `eevdf` names the kernel default."
        ),
    ] = [],  # noqa: B006
    set_: Annotated[
        list[str], typer.Option("--set", help="Tunable k=v for the policy (repeatable).")
    ] = [],  # noqa: B006
    arm: Annotated[
        list[str], typer.Option(help=f"An EEVDF knob arm (repeatable): {KNOB_HELP}.")
    ] = [],  # noqa: B006
    baseline: Annotated[str, typer.Option(help="The baseline arm.")] = "eevdf",
    runs: Annotated[int, spec_option(BenchArgs, "runs")] = 5,
    level: Annotated[list[str], typer.Option(help="Load level(s) to run (default: all).")] = [],  # noqa: B006
    quick: Annotated[bool, typer.Option(help="Small sizes (for tests and smoke runs).")] = False,
    seed: Annotated[int, spec_option(BenchArgs, "seed")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON record.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Also write the PNG plot here.")] = None,
    md: Annotated[Path | None, typer.Option(help="Also write the markdown table here.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            help="Also copy the JSON record here (it is always in the state dir's bench/)."
        ),
    ] = None,
) -> None:
    """Interleaved runs of a workload under EEVDF and policies, with verdicts."""
    try:
        out = client(json_out, steps=True).call(
            "benchmark",
            args(
                workload=workload,
                policies=policy,
                knobs=arm,
                tunables=parse_overrides(set_),
                baseline=baseline,
                runs=runs,
                levels=level,
                quick=quick,
                seed=seed,
            ),
        )
        written = _copies(out, md, plot, None, out_dir)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    (result,) = out["results"]
    if json_out:
        emit_json({**result, "written": written})
        return
    print(out["table"], end="")
    for row in result["arms"]:
        print(f"{row['level']} {row['arm']}: {row['verdict']} - {row['reason']}")
    print(f"wrote {', '.join(written)}")


@app.command("suite")
def suite_cmd(
    policies: Annotated[str, typer.Option(help="`all` or a comma list of policies.")] = "all",
    workloads: Annotated[str, typer.Option(help="`all` or a comma list of workloads.")] = "all",
    arm: Annotated[
        list[str],
        typer.Option(
            help=f"EEVDF knob arms beside the policies (repeatable): {KNOB_HELP}; "
            f"`peers` (the default) is {', '.join(PEER_KNOBS)}, `none` runs policies only."
        ),
    ] = ["peers"],  # noqa: B006
    runs: Annotated[int, spec_option(SuiteArgs, "runs")] = 5,
    quick: Annotated[bool, typer.Option(help="Small sizes.")] = False,
    seed: Annotated[int, spec_option(SuiteArgs, "seed")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON records.")] = False,
    md: Annotated[Path | None, typer.Option(help="Also write the markdown table here.")] = None,
    plot_dir: Annotated[
        Path | None, typer.Option(help="Also write one PNG per workload here.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Also copy the JSON record here.")] = None,
) -> None:
    """Every workload × policy against EEVDF in this boot; prints the ratio table."""
    try:
        out = client(json_out, steps=True).call(
            "bench_suite",
            args(
                policies=None if policies == "all" else [p for p in policies.split(",") if p],
                workloads=None if workloads == "all" else [w for w in workloads.split(",") if w],
                knobs=None if arm == ["peers"] else [] if arm == ["none"] else arm,
                runs=runs,
                quick=quick,
                seed=seed,
            ),
        )
        written = _copies(out, md, None, plot_dir, out_dir)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json({"results": out["results"], "written": written})
        return
    print(out["table"], end="")
    print(f"wrote {', '.join(written)}")
