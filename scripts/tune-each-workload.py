#!/usr/bin/env python3
"""`schedagent tune` once on each built-in workload, in one boot, with a JSON summary.

Runs inside the testbed (root, sched_ext). Each workload is started as a long-running
process, tuned with the offline planner, then stopped. The request servers (wakelat,
mixed) write an access log, so their windows are judged on the client's own p99
service time; for them the floor (the server alone on the idle system, the same
log, the same window length) is measured first. Prints one JSON object per workload
as it finishes, then a summary.

    schedagent sandbox run -- python scripts/tune-each-workload.py [--only mixed ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from schedagent import services
from schedagent.agent.tune import TuneRequest
from schedagent.bench import workload
from schedagent.execution import measure as live
from schedagent.kernel import scx
from schedagent.kernel.proctree import stop_tree
from schedagent.models import Slo, Target, TuneBudget

CPUS = os.cpu_count() or 1


@contextlib.contextmanager
def _running(argv: list[str], settle_s: float) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle_s)
        yield proc
    finally:
        stop_tree(proc)


def _server(log: Path, rate: int, burn_us: int) -> list[str]:
    binary = workload.build(workload.resolve("wakelat"))
    return [
        str(binary),
        "-w",
        "4",
        "-n",
        "100000000",
        "-r",
        str(rate),
        "-b",
        str(burn_us),
        "-l",
        str(log),
    ]


def _floor(argv: list[str], log: Path, window_s: float) -> float:
    """The server's p99 service time alone on the idle system (median of 3 windows)."""
    slo = Slo("p99_request_latency", "<=", None, "us", "floor")
    with (
        _running(argv, 4.0) as proc,
        live.Meter(Target(pid=proc.pid), slo, latency_log=log) as meter,
    ):
        values = sorted(meter.measure(window_s).value for _ in range(3))
    log.unlink(missing_ok=True)
    return values[1]


def _tune(
    name: str,
    argv: list[str],
    settle_s: float,
    log: Path | None,
    window_s: float,
    background: list[str] | None = None,
) -> dict[str, object]:
    seq = scx.read_state().enable_seq
    hogs = subprocess.Popen(background, stdout=subprocess.DEVNULL) if background else None
    try:
        with _running(argv, settle_s) as proc:
            rep = services.tune(
                TuneRequest(
                    Target(pid=proc.pid),
                    latency_log=str(log) if log else None,
                    budget=TuneBudget(
                        observe_s=3,
                        window_s=window_s,
                        rounds=4,
                        budget_s=600,
                        max_evals=12,
                        max_candidates=2,
                    ),
                )
            )
    finally:
        if hogs is not None:
            stop_tree(hogs)
    d = rep.decision
    assert d is not None
    return {
        "workload": name,
        "class": rep.profile["class"],
        "slo": rep.slo,
        "metric": rep.metric["name"],
        "ended": rep.ended,
        "decision": d.policy,
        "tunables": d.tunables,
        "verdict": d.verdict,
        "ratio": d.ratio,
        "ci": d.ci,
        "why": d.why,
        "trials": [
            {"label": t.label, "verdict": t.verdict or t.status, "ratio": t.ratio, "ci": t.ci}
            for t in rep.trials
        ],
        "eevdf_median": sorted(rep.baseline_samples)[len(rep.baseline_samples) // 2]
        if rep.baseline_samples
        else None,
        "evaluations": rep.evaluations,
        "wall_s": round(rep.wall_s, 1),
        "sched_ext_runs": scx.read_state().enable_seq - seq,
        "state_after": scx.read_state().state,
    }


def _with_floor(result: dict[str, object], floor_us: float) -> dict[str, object]:
    """Add the floor and the kept policy's distance from it (EEVDF's when nothing was kept)."""
    base, ratio = result["eevdf_median"], result["ratio"]
    result["floor_p99_us"] = round(floor_us, 1)
    if isinstance(base, float):
        kept = base * (ratio if isinstance(ratio, float) else 1.0)
        result["kept_p99_us"] = round(kept, 1)
        result["distance_from_floor_us"] = round(kept - floor_us, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="workload names")
    parser.add_argument("--window-s", type=float, default=2.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tune-each-"))
    jobset = workload.build(workload.resolve("jobset"))
    hogs = ["stress-ng", "--cpu", str(2 * CPUS), "--timeout", "3600s", "-q"]
    plans: dict[str, Callable[[], dict[str, object]]] = {
        "messaging": lambda: _tune(
            "messaging",
            ["perf", "bench", "sched", "messaging", "-t", "-g", "1", "-l", "100000000"],
            15.0,
            None,
            args.window_s,
        ),  # past its start-up, which tune would call a phase change
        "throughput": lambda: _tune("throughput", hogs, 3.0, None, args.window_s),
        "jobset": lambda: _tune(
            "jobset",
            [str(jobset), "-s", "1000", "-S", "30", "-l", "2", "-L", "150000"],
            3.0,
            None,
            args.window_s,
        ),
        "wakelat": lambda: _with_floor(
            _tune(
                "wakelat",
                _server(tmp / "wakelat.log", 200, 1000),
                4.0,
                tmp / "wakelat.log",
                args.window_s,
            ),
            _floor(
                _server(tmp / "wakelat-floor.log", 200, 1000),
                tmp / "wakelat-floor.log",
                args.window_s,
            ),
        ),
        "mixed": lambda: _with_floor(
            _tune(
                "mixed",
                _server(tmp / "mixed.log", 400, 3000),
                6.0,
                tmp / "mixed.log",
                args.window_s,
                background=hogs,
            ),
            _floor(
                _server(tmp / "mixed-floor.log", 400, 3000), tmp / "mixed-floor.log", args.window_s
            ),
        ),
    }
    results = []
    for name in args.only or list(plans):
        if name not in plans:
            raise SystemExit(f"unknown workload {name!r}: expected one of {', '.join(plans)}")
        result = plans[name]()
        print(json.dumps(result, default=str), flush=True)
        results.append(result)
    print(
        json.dumps(
            {
                "summary": [
                    {
                        k: r.get(k)
                        for k in (
                            "workload",
                            "class",
                            "metric",
                            "decision",
                            "verdict",
                            "ratio",
                            "ci",
                            "floor_p99_us",
                            "distance_from_floor_us",
                            "evaluations",
                            "wall_s",
                        )
                    }
                    for r in results
                ]
            },
            default=str,
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
