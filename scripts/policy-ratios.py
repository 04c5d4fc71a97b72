#!/usr/bin/env python3
"""Measure each built-in policy against EEVDF in one boot (run inside the testbed).

For every policy, interleaved with EEVDF rounds:
  * messaging: `perf bench sched messaging` total time (lower is better);
  * wakeup latency under CPU load: cyclictest (SCHED_OTHER, 2 ms period) p99 and
    max in µs while stress-ng keeps both CPUs busy.
Prints a JSON record and a markdown table of medians and ratios to EEVDF.

    schedagent sandbox run -- python scripts/policy-ratios.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schedagent.kernel import scx
from schedagent.policy.repo import builtin_names


def messaging_s() -> float:
    out = subprocess.run(["perf", "bench", "sched", "messaging", "-g", "2", "-l", "50"],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"Total time: ([\d.]+) \[sec\]", out)
    assert match, out
    return float(match.group(1))


def wakeup_p99_us() -> tuple[float, float]:
    hogs = subprocess.Popen(["stress-ng", "--cpu", "2", "--timeout", "60s", "-q"])
    try:
        out = subprocess.run(["cyclictest", "--policy=other", "-t1", "-i", "2000", "-l", "1000",
                              "-q", "-h", "100000"], capture_output=True, text=True,
                             check=True).stdout
    finally:
        hogs.kill()
        hogs.wait()
    counts: list[tuple[int, int]] = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            counts.append((int(parts[0]), int(parts[1])))
    total = sum(c for _, c in counts)
    assert total > 0, out[-2000:]
    seen, p99 = 0, 0
    for us, count in counts:
        seen += count
        if seen >= 0.99 * total:
            p99 = us
            break
    overflow = re.search(r"# Max Latencys: (\d+)", out)
    peak = float(overflow.group(1)) if overflow else float(max(us for us, c in counts if c))
    return float(p99), peak


def measure(policy: str) -> dict[str, float]:
    loader = None
    if policy != "eevdf":
        loader = subprocess.Popen([sys.executable, "-m", "schedagent", "policies", "load", policy],
                                  stderr=subprocess.PIPE, text=True)
        ok, snap = scx.wait_for(lambda s: s.is_enabled and s.ops == policy, 300.0, poll_s=0.1)
        assert ok, f"{policy} did not enable: {snap}"
    try:
        msg = messaging_s()
        p99, peak = wakeup_p99_us()
    finally:
        if loader is not None:
            loader.send_signal(signal.SIGTERM)
            loader.wait()
            assert loader.stderr is not None
            loader.stderr.close()
    assert scx.wait_for(lambda s: s.state == "disabled", 10.0)[0]
    return {"messaging_s": msg, "wakeup_p99_us": p99, "wakeup_max_us": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policies", default="all")
    parser.add_argument("--out", default="out/policy-ratios.json")
    args = parser.parse_args()
    names = builtin_names() if args.policies == "all" else args.policies.split(",")
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in ["eevdf", *names]}
    half = (len(names) + 1) // 2
    order = ["eevdf", *names[:half], "eevdf", *names[half:]]
    for rnd in range(args.rounds):
        # interleaved: EEVDF is measured twice per round, between the policies
        for which in order if rnd % 2 == 0 else order[::-1]:
            started = time.monotonic()
            samples[which].append(measure(which))
            print(f"round {rnd + 1} {which}: {samples[which][-1]} "
                  f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    med = {n: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
           for n, runs in samples.items()}
    base = med["eevdf"]
    table = ["| policy | messaging s | ratio | wakeup p99 µs | ratio | wakeup max µs |",
             "|---|---|---|---|---|---|"]
    for name, m in med.items():
        table.append(f"| {name} | {m['messaging_s']:.3f} | "
                     f"{m['messaging_s'] / base['messaging_s']:.2f} | {m['wakeup_p99_us']:.0f} | "
                     f"{m['wakeup_p99_us'] / max(base['wakeup_p99_us'], 1):.2f} | "
                     f"{m['wakeup_max_us']:.0f} |")
    record = {"rounds": args.rounds, "samples": samples, "medians": med}
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(med, indent=2))
    print("\n".join(table))


if __name__ == "__main__":
    main()
