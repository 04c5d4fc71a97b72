"""The benchmark operations every front end reaches through ``schedagent.services``.

A comparison gates every policy arm first, runs the arms interleaved in this boot
(``runner.compare_arms``), records each policy's verdict for the planners, and writes the
JSON record, the markdown table and the plots under the state directory, whichever front
end asked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schedagent import config
from schedagent.bench import report as bench_report
from schedagent.bench import runner as bench_runner
from schedagent.bench import workload as bench_workload
from schedagent.execution import engine, interventions
from schedagent.kernel import knobs
from schedagent.policy import repo
from schedagent.store import Store

log = logging.getLogger(__name__)


def bench_workloads() -> list[dict[str, object]]:
    """``bench list``: every built-in workload definition."""
    return [bench_workload.describe(w) for w in bench_workload.all_workloads()]


def _bench_sessions(store: Store) -> bench_runner.SessionFactory:
    @contextlib.contextmanager
    def factory(
        arm: bench_runner.Arm,
    ) -> Iterator[engine.Session | knobs.KnobSession | None]:
        if arm.knob is not None:  # EEVDF with one of its knobs, every thread put back after
            with interventions.knob_session(arm.knob.label, store) as held:
                yield held
            return
        if arm.policy is None:
            yield None
            return
        req = engine.RunRequest(arm.policy, arm.overrides, switch_all=True, actor="bench")
        with engine.session(req, store) as sess:
            yield sess

    return factory


def bench_compare(
    workload: str,
    arms: list[bench_runner.Arm],
    runs: int = 5,
    *,
    baseline: bench_runner.Arm | None = None,
    quick: bool = False,
    levels: list[str] | None = None,
    seed: int = 0,
    confidence: float = 0.95,
    progress: bench_runner.Progress | None = None,
) -> bench_runner.BenchResult:
    """A/B(/C...) comparison of arms on one workload, interleaved in this boot.

    Every policy arm passes the gates first, so a bad candidate is one clear error
    rather than N invalid runs. Verdicts go to the store for the planners.
    """
    wl = bench_workload.resolve(workload)
    if levels:
        for level in levels:
            wl.variables(level, quick, Path("/tmp"), None)  # unknown level: clear error now
    store = Store()
    try:
        for arm in [*arms, *([baseline] if baseline else [])]:
            if arm.policy is not None:
                engine.verify(arm.policy, arm.overrides, store)
            if arm.knob is not None:
                knobs.check_allowed(arm.knob)  # refused now, not in the first run
        result = bench_runner.compare_arms(
            wl,
            arms,
            _bench_sessions(store),
            runs,
            baseline=baseline,
            quick=quick,
            seed=seed,
            confidence=confidence,
            levels=levels,
            progress=progress,
        )
        for arm_result in result.arms:
            policy = arm_result.arm.split("[", 1)[0]
            if (
                policy in (bench_runner.EEVDF, bench_runner.FLOOR)
                or policy.startswith("eevdf")
                or bench_runner.is_knob_label(policy)  # a knob is no policy to rank
            ):
                continue
            cmp = next(
                (c for c in arm_result.comparisons if c.metric == result.primary_metric), None
            )
            store.add_verdict(
                policy,
                wl.spec.slo_class,
                arm_result.verdict,
                workload=wl.name,
                level=arm_result.level,
                arm=arm_result.arm,
                baseline=result.baseline,
                metric=result.primary_metric,
                ratio=cmp.ratio if cmp else None,
                ci=[cmp.ci_low, cmp.ci_high] if cmp else None,
                reason=arm_result.reason,
            )
        return result
    finally:
        store.close()


def bench_suite(
    policies: list[str] | None = None,
    workloads: list[str] | None = None,
    runs: int = 5,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bench_runner.Progress | None = None,
    knob_arms: list[str] | None = None,
) -> list[bench_runner.BenchResult]:
    """Every workload × policy against EEVDF, in this boot, beside EEVDF's own knobs."""
    names = policies or repo.builtin_names()
    arms = [bench_runner.Arm(p) for p in names]
    arms += [bench_runner.Arm.of_knob(k) for k in knob_arms or []]
    chosen = workloads or [w.name for w in bench_workload.all_workloads()]
    return [bench_compare(w, arms, runs, quick=quick, seed=seed, progress=progress) for w in chosen]


@dataclass(frozen=True, slots=True)
class BenchRun:
    """One ``benchmark`` or ``bench_suite``: its results and the files that record them."""

    results: list[bench_runner.BenchResult]
    record: Path
    markdown: Path
    #: workload -> its PNG plot (missing when the plot could not be drawn)
    plots: dict[str, Path]
    #: the terminal table of every arm's verdict
    table: str

    @property
    def written(self) -> list[str]:
        """Every file written, the JSON record first."""
        return [str(self.record), str(self.markdown), *(str(p) for p in self.plots.values())]


def record_bench(
    results: list[bench_runner.BenchResult], directory: Path | None = None
) -> BenchRun:
    """Write the JSON record, the markdown table and one plot per workload under the state
    directory's ``bench/``, and a ``bench`` event naming them, whichever front end ran it."""
    directory = directory or config.state_dir() / "bench"
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{'-'.join(r.workload for r in results)[:80]}"
    record = directory / f"{stem}.json"
    record.write_text(json.dumps([r.to_json() for r in results], indent=1, default=str))
    markdown = directory / f"{stem}.md"
    markdown.write_text(bench_report.markdown(results))
    plots: dict[str, Path] = {}
    for res in results:
        path = directory / f"{stem}-{res.workload}.png"
        try:
            bench_report.plot(res, path)
        except (OSError, ValueError, ArithmeticError) as err:  # the record is what matters
            log.warning("bench: no plot for %s: %s", res.workload, err)
            continue
        plots[res.workload] = path
    store = Store()
    try:
        store.add_event(
            "bench",
            None,
            record=str(record),
            workloads=[r.workload for r in results],
            verdicts=[
                {"workload": r.workload, "level": a.level, "arm": a.arm, "verdict": a.verdict}
                for r in results
                for a in r.arms
            ],
        )
    finally:
        store.close()
    return BenchRun(results, record, markdown, plots, bench_report.text_table(results))


def run_benchmark(
    workload: str,
    arms: list[bench_runner.Arm],
    runs: int = 5,
    *,
    baseline: bench_runner.Arm | None = None,
    quick: bool = False,
    levels: list[str] | None = None,
    seed: int = 0,
    progress: bench_runner.Progress | None = None,
) -> BenchRun:
    """``bench_compare``, recorded (``record_bench``)."""
    result = bench_compare(
        workload,
        arms,
        runs,
        baseline=baseline,
        quick=quick,
        levels=levels,
        seed=seed,
        progress=progress,
    )
    return record_bench([result])


def run_suite(
    policies: list[str] | None = None,
    workloads: list[str] | None = None,
    runs: int = 5,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bench_runner.Progress | None = None,
    knob_arms: list[str] | None = None,
) -> BenchRun:
    """``bench_suite``, recorded as one run (``record_bench``)."""
    return record_bench(
        bench_suite(
            policies,
            workloads,
            runs,
            quick=quick,
            seed=seed,
            progress=progress,
            knob_arms=knob_arms,
        )
    )
