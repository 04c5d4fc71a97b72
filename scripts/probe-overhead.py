#!/usr/bin/env python3
"""Overhead of the bcc deep probe: `perf bench sched messaging` with and without it.

Runs inside the testbed (root, bcc). Interleaves runs without and with the probe
attached (target: the benchmark's own process tree), and prints medians and the
ratio, plus the probe's own run time as reported by the kernel.

    schedagent sandbox run -- python scripts/probe-overhead.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time

from schedagent.errors import TargetGone
from schedagent.kernel import bccprobes, partial

CMD = ["perf", "bench", "sched", "messaging", "-g", "1", "-l", "100"]


def _tree(pid: int) -> list[int]:
    try:
        return partial.process_tree(pid)
    except TargetGone:
        return []


def _seconds(out: str) -> float:
    match = re.search(r"Total time: ([\d.]+) \[sec\]", out)
    assert match, out
    return float(match.group(1))


def messaging(probe: bool) -> tuple[float, float | None]:
    """One messaging run; with ``probe``, the bcc probes are compiled and attached first."""
    if not probe:
        return _seconds(
            subprocess.run(CMD, capture_output=True, text=True, check=True).stdout
        ), None
    with bccprobes.attached() as deep:
        proc = subprocess.Popen(CMD, stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)  # perf forks its senders and receivers first
        deep.add_targets(_tree(proc.pid))
        out, _ = proc.communicate()
        rep = deep.report()
    return _seconds(out), rep.overhead_pct_of_one_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    without: list[float] = []
    with_probe: list[float] = []
    cpu_pct: list[float] = []
    for _ in range(args.runs):
        without.append(messaging(False)[0])
        secs, pct = messaging(True)
        with_probe.append(secs)
        if pct is not None:
            cpu_pct.append(pct)
    result = {
        "without_s": without,
        "with_probe_s": with_probe,
        "median_ratio": statistics.median(with_probe) / statistics.median(without),
        "probe_cpu_pct_of_one_cpu": cpu_pct,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
