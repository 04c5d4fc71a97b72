#!/usr/bin/env python3
"""A tuner's regret, per built-in workload, in one boot: its decision against the best
arm it could have chosen, each measured independently by the benchmark.

For each workload (at one load level):

1. every arm is benchmarked, interleaved: EEVDF, EEVDF's knobs (nice:-10, slice:1ms,
   fifo:1) and every repository policy; each arm's primary metric is a ratio to EEVDF's
   in the same runs. The best arm is the best of those ratios (EEVDF's own is 1).
2. The workload is started as a long-running process and ``tune`` runs on it with the
   offline planner and its default candidates (knobs and policies).
3. tune's decision (a knob, a policy with its tunables, or EEVDF) is benchmarked again
   the same way, against EEVDF in its own interleaved runs.

Regret is the decision's ratio over the best arm's, oriented so that 1.0 is "chose the
best" and above 1 is how far it fell short (a lower-is-better metric: decision / best;
higher-is-better: best / decision). A decision measured better than the "best" arm (by
noise) scores below 1. Prints one JSON object per workload as it finishes, then the
table.

    schedagent sandbox run --timeout-s 14400 -- python scripts/regret.py [--only mixed ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from schedagent import services
from schedagent.agent.tune import TuneRequest
from schedagent.bench import workload
from schedagent.bench.runner import EEVDF, Arm, BenchResult
from schedagent.kernel import scx
from schedagent.kernel.proctree import stop_tree
from schedagent.models import PEER_KNOBS, Target, TuneBudget
from schedagent.policy import repo

#: parameters that make a benchmark command run until it is stopped. jobset starts every
#: job at once (10^5 of them exited at once): a thousand short jobs beside two of 150 s,
#: as tune-each-workload.py runs it; stress-ng refuses --cpu-ops above 10^8.
LONG_RUN = {
    "requests": "100000000",
    "loops": "10000000",
    "short_jobs": "1000",
    "short_ms": "30",
    "long_ms": "150000",
    "ops": "100000000",
}
#: the load level each workload is judged at (its first level, else its only one)
LEVELS = {"wakelat": "low"}


def _primary_ratio(result: BenchResult, arm_label: str) -> tuple[float, str]:
    """The arm's primary-metric ratio to EEVDF, and the metric's direction."""
    arm = next(a for a in result.arms if a.arm == arm_label)
    comparison = next(c for c in arm.comparisons if c.metric == result.primary_metric)
    return comparison.ratio, comparison.direction


def _decision_arm(policy: str, tunables: dict[str, int], kind: str) -> Arm | None:
    if policy == "eevdf":
        return None
    return Arm.of_knob(policy) if kind == "knob" else Arm(policy, dict(tunables))


@contextlib.contextmanager
def _running(wl: workload.Workload, level: str, tmp: Path) -> Iterator[tuple[int, Path | None]]:
    """The workload's command (and background) at ``level``, made to run until stopped;
    yields the command's pid and, for wakelat-based servers, their access log."""
    binary = workload.build(wl)
    variables = wl.variables(level, False, tmp, binary)
    variables.update({k: v for k, v in LONG_RUN.items() if k in variables})
    argv = wl.argv(wl.spec.command, variables)
    log = None
    if wl.spec.build is not None and wl.spec.build.source.endswith("wakelat.c"):
        log = tmp / f"{wl.name}-access.log"
        argv += ["-l", str(log)]
    background = (
        subprocess.Popen(wl.argv(wl.spec.background, variables), stdout=subprocess.DEVNULL)
        if wl.spec.background
        else None
    )
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(15.0 if wl.name == "messaging" else 6.0)  # past the start-up burst
        yield proc.pid, log
    finally:
        for p in (proc, background):
            if p is not None:
                stop_tree(p)


def regret_of(name: str, runs: int, tmp: Path) -> dict[str, object]:
    wl = workload.resolve(name)
    level = LEVELS.get(name, wl.level_names()[0])
    arms = [Arm(p) for p in repo.builtin_names()] + [Arm.of_knob(k) for k in PEER_KNOBS]
    every = services.bench_compare(name, arms, runs=runs, quick=True, levels=[level])
    ratios = {a.label: _primary_ratio(every, a.label)[0] for a in arms}
    direction = _primary_ratio(every, arms[0].label)[1]
    ratios[EEVDF] = 1.0
    pick = min if direction == "lower" else max
    best = pick(ratios, key=lambda label: ratios[label])

    seq = scx.read_state().enable_seq
    with _running(wl, level, tmp) as (pid, log):
        rep = services.tune(
            TuneRequest(
                Target(pid=pid),
                latency_log=str(log) if log else None,
                budget=TuneBudget(observe_s=3, window_s=2, rounds=4, budget_s=1200),
            )
        )
    d = rep.decision
    assert d is not None
    arm = _decision_arm(d.policy, d.tunables, d.kind)
    if arm is None:
        decided = 1.0
    else:
        again = services.bench_compare(name, [arm], runs=runs, quick=True, levels=[level])
        decided = _primary_ratio(again, arm.label)[0]
    regret = decided / ratios[best] if direction == "lower" else ratios[best] / decided
    return {
        "workload": name,
        "level": level,
        "metric": every.primary_metric,
        "direction": direction,
        "arms": {k: round(v, 3) for k, v in sorted(ratios.items(), key=lambda kv: kv[1])},
        "best_arm": best,
        "best_ratio": round(ratios[best], 3),
        "decision": arm.label if arm is not None else EEVDF,
        "decision_kind": d.kind if arm is not None else "eevdf",
        "decision_verdict": d.verdict,
        "decision_ratio": round(decided, 3),
        "regret": round(regret, 3),
        "tune_why": d.why,
        "tune_trials": [(t.label, t.verdict or t.status, t.ratio) for t in rep.trials],
        "tune_wall_s": round(rep.wall_s),
        "sched_ext_after": scx.read_state().state,
        "sched_ext_runs": scx.read_state().enable_seq - seq,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="workload names")
    parser.add_argument("--runs", type=int, default=3, help="benchmark runs per arm")
    args = parser.parse_args()
    names = [w.name for w in workload.all_workloads()]
    for name in args.only or []:
        if name not in names:
            raise SystemExit(f"unknown workload {name!r}: expected one of {', '.join(names)}")
    tmp = Path(tempfile.mkdtemp(prefix="regret-"))
    results = []
    for name in args.only or names:
        result = regret_of(name, args.runs, tmp)
        print(json.dumps(result), flush=True)
        results.append(result)
    print(
        "\n| workload | level | metric | best arm (ratio to EEVDF) | tune's decision (ratio) | regret |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workload']} | {r['level']} | {r['metric']} ({r['direction']} is better) | "
            f"{r['best_arm']} ({r['best_ratio']}) | {r['decision']} ({r['decision_ratio']}) | "
            f"**{r['regret']}** |"
        )
    print(json.dumps({"summary": results}))


if __name__ == "__main__":
    main()
