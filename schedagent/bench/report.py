"""Benchmark reports: a terminal/markdown table and a PNG plot of one result."""

from __future__ import annotations

from pathlib import Path

from schedagent.bench.png import Canvas, text_width
from schedagent.bench.runner import ArmResult, BenchResult, MetricComparison


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


def _primary(arm: ArmResult, metric: str) -> MetricComparison | None:
    return next((c for c in arm.comparisons if c.metric == metric), None)


#: the metric that measures everyone else's work (the background load), where one is kept
OTHERS_METRIC = "hog_ops_per_s"


def _others(arm: ArmResult) -> str:
    """The others' work under this arm against the baseline (``0.72x`` = 28% less)."""
    cmp = _primary(arm, OTHERS_METRIC)
    return "-" if cmp is None else f"{cmp.ratio:.2f}x"


def markdown(results: list[BenchResult]) -> str:
    """One table row per workload × level × arm, primary metric first."""
    lines = [
        (
            "| workload | level | policy | metric | EEVDF median | policy median | ratio "
            "[95% CI] | p | verdict | floor | distance from floor | others' work | valid runs |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for arm in res.arms:
            cmp = _primary(arm, res.primary_metric)
            floor = res.floor_medians.get(arm.level, {}).get(res.primary_metric)
            if cmp is None:
                lines.append(
                    f"| {res.workload} | {arm.level} | {arm.arm} | "
                    f"{res.primary_metric} | - | - | - | - | **{arm.verdict}** | "
                    f"{_fmt(floor)} | - | {_others(arm)} | {arm.valid_runs}/"
                    f"{arm.valid_runs + arm.invalid_runs} |"
                )
                continue
            distance = cmp.candidate_median - floor if floor is not None else None
            lines.append(
                f"| {res.workload} | {arm.level} | {arm.arm} | {cmp.metric} ({cmp.unit}) | "
                f"{_fmt(cmp.baseline_median)} | {_fmt(cmp.candidate_median)} | "
                f"{cmp.ratio:.3f} [{cmp.ci_low:.3f}, {cmp.ci_high:.3f}] | {cmp.p_value:.3g} | "
                f"**{arm.verdict}** | {_fmt(floor)} | {_fmt(distance)} | {_others(arm)} | "
                f"{arm.valid_runs}/{arm.valid_runs + arm.invalid_runs} |"
            )
    notes = sorted(
        {
            f"- {r.workload}/{a.level} {a.arm}: {a.reason}"
            for r in results
            for a in r.arms
            if a.verdict == "invalid"
        }
    )
    if notes:
        lines += ["", "Invalid comparisons:", *notes]
    return "\n".join(lines) + "\n"


def text_table(results: list[BenchResult]) -> str:
    """A compact table for the terminal."""
    rows = [("workload", "level", "arm", "ratio [95% CI]", "verdict", "vs floor", "others")]
    for res in results:
        for arm in res.arms:
            cmp = _primary(arm, res.primary_metric)
            floor = res.floor_medians.get(arm.level, {}).get(res.primary_metric)
            ratio = (
                f"{cmp.ratio:.3f} [{cmp.ci_low:.3f}, {cmp.ci_high:.3f}]" if cmp is not None else "-"
            )
            dist = (
                f"{cmp.candidate_median - floor:+.4g}"
                if cmp is not None and floor is not None
                else "-"
            )
            rows.append((res.workload, arm.level, arm.arm, ratio, arm.verdict, dist, _others(arm)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return (
        "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        )
        + "\n"
    )


_COLORS = {
    "better": (30, 140, 60),
    "worse": (200, 40, 40),
    "no-difference": (90, 90, 90),
    "insufficient": (150, 150, 150),
    "invalid": (200, 140, 0),
}
_BASE = (40, 80, 200)
_FLOOR = (0, 150, 150)


def plot(result: BenchResult, path: Path) -> None:
    """Each arm's valid samples of the primary metric as dots with a median bar, per level.

    A blue dashed line marks the baseline's median and a teal one the idle floor.
    """
    metric = result.primary_metric
    spec_dir = next(
        (c.direction for a in result.arms for c in a.comparisons if c.metric == metric), "lower"
    )
    levels = sorted({r.level for r in result.records}, key=[r.level for r in result.records].index)
    arms_by_level = {
        lv: [result.baseline]
        + [a.arm for a in result.arms if a.level == lv]
        + ([] if not result.floor_medians.get(lv) else ["floor"])
        for lv in levels
    }
    row_h, left, right, top = 22, 190, 330, 40
    width = 1100
    height = top + sum(30 + row_h * len(a) + 20 for a in arms_by_level.values()) + 10
    c = Canvas(width, height)
    c.text(
        10,
        10,
        f"{result.workload}: {metric} ({spec_dir} is better), "
        f"{result.runs_per_arm} runs per arm, kernel {result.kernel}",
        scale=2,
    )
    y = top
    for level in levels:
        samples = {
            arm: [
                r.metrics[metric]
                for r in result.records
                if r.level == level
                and r.arm == arm
                and r.valid
                and not r.warmup
                and metric in r.metrics
            ]
            for arm in arms_by_level[level]
        }
        hi = max((v for vs in samples.values() for v in vs), default=1.0) * 1.05 or 1.0
        x0, x1 = left, width - right

        def sx(v: float, x0: int = x0, x1: int = x1, hi: float = hi) -> int:
            return x0 + int((x1 - x0) * v / hi)

        c.text(10, y, f"level {level}", scale=1)
        c.text(x1 - text_width(f"{hi:.4g}"), y, f"{hi:.4g}")
        c.text(x0, y, "0")
        y += 14
        c.hline(x0, x1, y, (180, 180, 180))
        rows_top = y
        for arm in arms_by_level[level]:
            y += row_h
            res = next((a for a in result.arms if a.level == level and a.arm == arm), None)
            color = (
                _BASE
                if arm == result.baseline
                else _FLOOR
                if arm == "floor"
                else _COLORS.get(res.verdict if res else "invalid", (0, 0, 0))
            )
            c.text(10, y - 4, arm[:29], color)
            for v in samples[arm]:
                c.rect(sx(v) - 2, y - 2, sx(v) + 2, y + 2, color)
            if samples[arm]:
                med = sorted(samples[arm])[len(samples[arm]) // 2]
                c.rect(sx(med) - 1, y - 8, sx(med), y + 8, color)
            if res is not None:
                cmp = _primary(res, metric)
                label = (
                    f"{cmp.ratio:.3f} [{cmp.ci_low:.2f},{cmp.ci_high:.2f}] {res.verdict}"
                    if cmp
                    else res.verdict
                )
                c.text(x1 + 10, y - 4, label, color)
        base_med = result.baseline_medians.get(level, {}).get(metric)
        if base_med is not None:
            c.vline(sx(base_med), rows_top, y + 8, _BASE, dash=3)
        floor_med = result.floor_medians.get(level, {}).get(metric)
        if floor_med is not None:
            c.vline(sx(floor_med), rows_top, y + 8, _FLOOR, dash=2)
        y += 36
    c.save(path)
