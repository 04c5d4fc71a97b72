"""``schedagent bench``: workloads, A/B runs against EEVDF, and the whole suite."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from schedagent import services
from schedagent.bench import report
from schedagent.bench.runner import Arm, BenchResult
from schedagent.cli.output import emit_json, fail, to_jsonable
from schedagent.config import state_dir
from schedagent.errors import ConfigError
from schedagent.policy.repo import parse_overrides

app = typer.Typer(help="Benchmark workloads under policies, A/B against EEVDF in one boot.",
                  no_args_is_help=True)


class ProgressBar:
    """One line on stderr: redrawn in place on a terminal, a line per step otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 24
        filled = width * done // max(total, 1)
        elapsed = time.monotonic() - self.started
        eta = f", ~{elapsed / done * (total - done):.0f} s left" if done else ""
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                f"{elapsed:.0f} s{eta}  {what}")
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _write_outputs(results: list[BenchResult], md: Path | None, plot: Path | None,
                   out_dir: Path | None) -> list[str]:
    """The JSON record always, the markdown table and plots when asked; return the paths."""
    written = []
    directory = out_dir or state_dir() / "bench"
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = directory / f"{stamp}-{'-'.join(r.workload for r in results)[:80]}.json"
    record.write_text(json.dumps([r.to_json() for r in results], indent=1, default=str))
    written.append(str(record))
    if md is not None:
        md.write_text(report.markdown(results))
        written.append(str(md))
    if plot is not None:
        if len(results) == 1:
            report.plot(results[0], plot)
            written.append(str(plot))
        else:
            plot.mkdir(parents=True, exist_ok=True)
            for res in results:
                path = plot / f"{res.workload}.png"
                report.plot(res, path)
                written.append(str(path))
    return written


@app.command("list")
def list_cmd(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
             ) -> None:
    """The built-in workloads: what they run, their metric and SLO class."""
    try:
        items = services.bench_workloads()
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(items)
        return
    for w in items:
        print(f"{w['name']:<11} {w['slo_class']:<17} {w['primary_metric']}")
        print(f"{'':<11} {w['summary']}")
        if w["levels"] != ["default"]:
            print(f"{'':<11} levels: {', '.join(w['levels'])}")  # type: ignore[arg-type]


def _arms(policy: list[str], sets: list[str]) -> list[Arm]:
    if sets and len(policy) != 1:
        raise ConfigError("--set applies to one policy; pass exactly one --policy with it")
    overrides = parse_overrides(sets)
    try:
        return [Arm.parse(p, overrides) for p in policy]
    except ValueError as err:
        raise ConfigError(str(err)) from err


@app.command("run")
def run_cmd(
    workload: Annotated[str, typer.Argument(help="A workload name (see `bench list`).")],
    policy: Annotated[list[str], typer.Option(help="Policy to compare (repeatable); `eevdf` "
                                              "names the kernel default.")] = [],  # noqa: B006
    set_: Annotated[list[str], typer.Option("--set", help="Tunable k=v for the policy "
                                            "(repeatable).")] = [],  # noqa: B006
    baseline: Annotated[str, typer.Option(help="The baseline arm.")] = "eevdf",
    runs: Annotated[int, typer.Option(min=2, max=100, help="Measured runs per arm.")] = 5,
    level: Annotated[list[str], typer.Option(help="Load level(s) to run (default: all).")]
    = [],  # noqa: B006
    quick: Annotated[bool, typer.Option(help="Small sizes (for tests and smoke runs).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the interleaving order.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON record.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG plot here.")] = None,
    md: Annotated[Path | None, typer.Option(help="Write a markdown table here.")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Directory for the JSON record "
                                                 "(default: the state dir's bench/).")] = None,
) -> None:
    """Interleaved runs of a workload under EEVDF and policies, with verdicts."""
    try:
        arms = _arms(policy or ["eevdf"], set_)
        base = Arm.parse(baseline)
        result = services.bench_compare(workload, arms, runs, baseline=base, quick=quick,
                                        levels=level or None, seed=seed,
                                        progress=ProgressBar())
        written = _write_outputs([result], md, plot, out_dir)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json({**result.to_json(), "written": written})
        return
    print(report.text_table([result]), end="")
    for arm in result.arms:
        print(f"{arm.level} {arm.arm}: {arm.verdict} - {arm.reason}")
    print(f"wrote {', '.join(written)}")


@app.command("suite")
def suite_cmd(
    policies: Annotated[str, typer.Option(help="`all` or a comma list of policies.")] = "all",
    workloads: Annotated[str, typer.Option(help="`all` or a comma list of workloads.")] = "all",
    runs: Annotated[int, typer.Option(min=2, max=100, help="Measured runs per arm.")] = 5,
    quick: Annotated[bool, typer.Option(help="Small sizes.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the interleaving order.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON records.")] = False,
    md: Annotated[Path | None, typer.Option(help="Write the markdown table here.")] = None,
    plot_dir: Annotated[Path | None, typer.Option(help="Write one PNG per workload here.")]
    = None,
    out_dir: Annotated[Path | None, typer.Option(help="Directory for the JSON record.")] = None,
) -> None:
    """Every workload × policy against EEVDF in this boot; prints the ratio table."""
    try:
        names = None if policies == "all" else [p for p in policies.split(",") if p]
        chosen = None if workloads == "all" else [w for w in workloads.split(",") if w]
        results = services.bench_suite(names, chosen, runs, quick=quick, seed=seed,
                                       progress=ProgressBar())
        written = _write_outputs(results, md, plot_dir, out_dir)
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json({"results": [to_jsonable(r.to_json()) for r in results], "written": written})
        return
    print(report.text_table(results), end="")
    print(f"wrote {', '.join(written)}")
