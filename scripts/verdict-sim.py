#!/usr/bin/env python3
"""Simulate schedagent's keep/revert decisions at the product's real regimes (issue 13).

Drives the project's own decision code, not a re-implementation: ``tune.run_trials`` (canary,
screening of every candidate, successive halving, the confirmation round, ``decide``)
with a fake meter, fake sessions, a simulated clock and a fake store, and
``bench.stats.compare`` for the bench's A/B verdict. Every window's value is
``100 x effect x noise`` on a lower-is-better metric.

- false keep: every policy is exactly as good as EEVDF (effect 1); the rate at which
  the decision keeps one anyway. The goal is at most 5%.
- power: one candidate (the planner's second, and its tunable variants) is truly 1.3x
  better (effect 1/1.3); the rate at which that one is kept.

Noise: ``normal`` multiplies by 1 + 0.15 N(0, 1); ``heavy`` by exp(0.1 t3) (Student's t
with 3 degrees of freedom: rare windows several times off, like a window with a stall).

    .venv/bin/python scripts/verdict-sim.py [--trials 5000] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from schedagent.agent import planner, tune
from schedagent.agent import report as tune_report
from schedagent.agent.port import Executor, ManualClock
from schedagent.bench import stats
from schedagent.daemon.config import DAEMON_BUDGET
from schedagent.models import (
    Features,
    LiveMetric,
    Sample,
    Slo,
    Target,
    TuneBudget,
    WorkloadProfile,
)
from schedagent.store import Store

Noise = Callable[[random.Random], float]

NOISES: dict[str, Noise] = {
    "normal": lambda rng: max(0.05, 1 + 0.15 * rng.gauss(0, 1)),
    "heavy": lambda rng: math.exp(
        0.1 * rng.gauss(0, 1) / math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(3)) / 3)
    ),
}
IMPROVEMENT = 1.3
METRIC = LiveMetric("p99_wakeup_us", "us", "lower", "simulated")
FEATURES = Features(1.0, 0.5, 0, 4, 500.0, 10.0, 300.0, 50.0, 0.1, 1, 0, 4, 2, 1.0, None, None)
PROFILE = WorkloadProfile(
    "mixed",
    0.8,
    FEATURES,
    Slo("p99_wakeup_latency", "<=", 1000.0, "us", "sim"),
    "sim",
    "pid 1",
    5.0,
)


@dataclass(slots=True)
class _Attached:
    problem_text: str | None = None

    def problem(self) -> str | None:
        return self.problem_text

    def placement(self) -> str:
        return ""


class SimWorld:
    """The target under EEVDF or a policy: each window one noisy value of the metric."""

    def __init__(
        self, rng: random.Random, noise: Noise, effects: dict[str, float], clock: ManualClock
    ) -> None:
        self.rng, self.noise, self.effects, self.clock = rng, noise, effects, clock
        self.metric = METRIC
        self.attached: str | None = None

    def measure(self, window_s: float) -> Sample:
        self.clock.sleep(window_s)
        effect = 1.0 if self.attached is None else self.effects.get(self.attached, 1.0)
        return Sample(100.0 * effect * self.noise(self.rng), FEATURES, False)

    @contextlib.contextmanager
    def attach(
        self, spec: str, _overrides: dict[str, int], _target: Target, *, canary: bool
    ) -> Iterator[_Attached]:
        self.attached = spec
        try:
            yield _Attached()
        finally:
            self.attached = None

    def hold_knob(
        self, label: str, target: Target, _others: list[int]
    ) -> contextlib.AbstractContextManager[_Attached]:
        return self.attach(label, {}, target, canary=False)


class NullStore:
    """Takes the decision's records and forgets them."""

    def add_verdict(self, *args: object, **kwargs: object) -> None:
        pass

    def add_event(self, *args: object, **kwargs: object) -> None:
        pass


class SimLoop(tune.Loop):  # the unit under simulation is the loop itself
    def gate(self, trials: list[tune_report.Trial]) -> list[tune_report.Trial]:
        return trials  # every variant passes the gates (compiling is not simulated)


def tune_keeps(req: tune.TuneRequest, noise: Noise, better: str | None, rng: random.Random) -> str:
    """One simulated tune run; returns the policy or knob kept ("eevdf" for none). The
    candidates are the product's: the profile's knobs, least intrusive first, then the
    ranked policies."""
    cands = [
        *planner.knobs(PROFILE, req.budget.max_knobs),
        *planner.rank(PROFILE, {}, req.budget.max_candidates),
    ]
    effects = {c.policy: 1.0 for c in cands}
    if better is not None:
        effects[better] = 1 / IMPROVEMENT
    clock = ManualClock()
    world = SimWorld(rng, noise, effects, clock)
    report = tune_report.TuneReport("sim", {}, "sim", {"name": METRIC.name}, "offline")
    report.trials = [tune_report.Trial(c.policy, c.overrides, c.reason, kind=c.kind) for c in cands]
    # duck-typed stand-ins: the store takes records, the world is the executor's meter side
    store = cast(Store, NullStore())
    loop = SimLoop(req, store, PROFILE, report, cast(Executor, world), world, clock=clock)
    tune.run_trials(loop)
    assert report.decision is not None
    return report.decision.policy


def bench_keeps(runs: int, noise: Noise, better: bool, rng: random.Random) -> bool:
    base = [100.0 * noise(rng) for _ in range(runs)]
    effect = 1 / IMPROVEMENT if better else 1.0
    cand = [100.0 * effect * noise(rng) for _ in range(runs)]
    return stats.compare(base, cand, "lower").verdict == "better"


def regimes() -> list[tuple[str, tune.TuneRequest | int]]:
    """(name, the request tune would make there, or the bench's runs per arm)."""
    target = Target(pid=1)
    b = DAEMON_BUDGET
    return [
        ("tune CLI defaults", tune.TuneRequest(target)),
        ("tune --rounds 2", tune.TuneRequest(target, budget=TuneBudget(rounds=2))),
        ("daemon defaults", tune.TuneRequest(target, budget=b)),
        ("bench --runs 5", 5),
    ]


def simulate(
    trials: int, seed: int, names: list[str] | None = None, noises: list[str] | None = None
) -> list[dict[str, object]]:
    """One row per regime and noise: false-keep rate and power."""
    rows: list[dict[str, object]] = []
    better = planner.rank(PROFILE, {}, 3)[1].policy
    for name, regime in regimes():
        if names is not None and name not in names:
            continue
        for noise_name, noise in NOISES.items():
            if noises is not None and noise_name not in noises:
                continue
            rng = random.Random(f"{seed}-{name}-{noise_name}")
            if isinstance(regime, int):
                false_keeps = sum(bench_keeps(regime, noise, False, rng) for _ in range(trials))
                kept = sum(bench_keeps(regime, noise, True, rng) for _ in range(trials))
            else:
                false_keeps = sum(
                    tune_keeps(regime, noise, None, rng) != "eevdf" for _ in range(trials)
                )
                kept = sum(tune_keeps(regime, noise, better, rng) == better for _ in range(trials))
            rows.append(
                {
                    "regime": name,
                    "noise": noise_name,
                    "trials": trials,
                    "false_keep": false_keeps / trials,
                    "power_1.3x": kept / trials,
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.monotonic()
    rows = simulate(args.trials, args.seed)
    print("| regime | noise | trials | false keep (no better than EEVDF) | power (true 1.3x) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['regime']} | {r['noise']} | {r['trials']} | {r['false_keep']:.2%} | "
            f"{r['power_1.3x']:.1%} |"
        )
    worst = max(float(r["false_keep"]) for r in rows)  # type: ignore[arg-type]
    print(
        f"\nworst false-keep rate {worst:.2%} (goal: at most 5%); "
        f"{time.monotonic() - started:.0f} s"
    )
    return 0 if worst <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
