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
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schedagent.kernel import bccprobes, partial

CMD = ["perf", "bench", "sched", "messaging", "-g", "1", "-l", "100"]


def messaging(probe: bool) -> tuple[float, float | None]:
    proc = subprocess.Popen(CMD, stdout=subprocess.PIPE, text=True)
    overhead: list[float] = []
    if probe:
        def watch() -> None:
            rep = bccprobes.run_deep(partial.Target(pid=proc.pid), 4.0)
            overhead.append(rep.overhead_pct_of_one_cpu)
        thread = threading.Thread(target=watch)
        thread.start()
    out, _ = proc.communicate()
    if probe:
        thread.join()
    match = re.search(r"Total time: ([\d.]+) \[sec\]", out)
    assert match, out
    return float(match.group(1)), overhead[0] if overhead else None


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
    result = {"without_s": without, "with_probe_s": with_probe,
              "median_ratio": statistics.median(with_probe) / statistics.median(without),
              "probe_cpu_pct_of_one_cpu": cpu_pct}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
