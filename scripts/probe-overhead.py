#!/usr/bin/env python3
"""Overhead of observing: `perf bench sched messaging` with and without a probe.

Runs inside the testbed (root). Interleaves runs without and with the probe attached
(target: the benchmark's own process tree), and prints medians and the ratio, plus the
probe's own run time as the kernel reports it. ``--probe observer`` (the default) is
the always-on observer (``kernel/observer.py``), attached before each run and detached
after it; ``--probe bcc`` is the bcc deep probe, compiled and attached for each run.

    schedagent sandbox run -- python scripts/probe-overhead.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import time

from schedagent.errors import TargetGone
from schedagent.kernel import bccprobes, observer, partial
from schedagent.models import Target

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


def messaging(probe: str | None) -> tuple[float, float | None]:
    """One messaging run; with ``probe``, that probe is attached first."""
    if probe is None:
        return _seconds(
            subprocess.run(CMD, capture_output=True, text=True, check=True).stdout
        ), None
    if probe == "observer":
        observer.report_cost()
        obs = observer.shared()
        assert obs is not None, observer.unavailable()
        try:
            proc = subprocess.Popen(CMD, stdout=subprocess.PIPE, text=True)
            obs.watch(Target(pid=proc.pid), [proc.pid])  # its children join at fork
            out, _ = proc.communicate()
            cost = obs.cost()
        finally:
            observer.reset_shared()  # detached: the next run without it sees no probe
        return _seconds(out), cost.cpu_pct
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
    parser.add_argument("--probe", choices=["observer", "bcc"], default="observer")
    args = parser.parse_args()
    without: list[float] = []
    with_probe: list[float] = []
    cpu_pct: list[float] = []
    for _ in range(args.runs):
        without.append(messaging(None)[0])
        secs, pct = messaging(args.probe)
        with_probe.append(secs)
        if pct is not None:
            cpu_pct.append(pct)
    result = {
        "probe": args.probe,
        "without_s": without,
        "with_probe_s": with_probe,
        "median_ratio": statistics.median(with_probe) / statistics.median(without),
        "probe_cpu_pct_of_one_cpu": cpu_pct,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
