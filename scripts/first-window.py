"""Seconds from `schedagent tune` starting to its first measured window (run in the testbed).

Starts the mixed workload's server beside CPU hogs and runs a short `tune --json` on it,
once with the observer and once with ``SCHEDAGENT_OBSERVER=off`` (the p99 probe is then
bcc's, compiled for the run). The compile cache is warmed first, so neither run compiles
a policy: what differs is the probe. Prints JSON: ``first_window_s`` and ``compile_s`` of
each run, as tune reported them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from schedagent.bench import workload

TUNE = [
    "--slo",
    "p99_wakeup_latency<=2000us",
    "--observe-s",
    "2",
    "--window-s",
    "1",
    "--rounds",
    "2",
    "--max-evals",
    "4",
    "--budget-s",
    "120",
    "--json",
]


def tune(pid: int, observer: str) -> dict[str, object]:
    env = {**os.environ, "SCHEDAGENT_OBSERVER": observer}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "schedagent", "tune", str(pid), *TUNE],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return {"observer": observer, "error": proc.stderr[-500:]}
    report = json.loads(proc.stdout)
    return {
        "observer": observer,
        "first_window_s": round(report["first_window_s"], 1),
        "compile_s": round(report["compile_s"], 1),
        "metric": report["metric"]["name"],
        "wall_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    subprocess.run(
        [sys.executable, "-m", "schedagent", "policies", "prebuild"],
        check=True,
        capture_output=True,
    )
    binary = workload.build(workload.resolve("mixed"))
    hogs = subprocess.Popen(["stress-ng", "--cpu", "4", "--timeout", "3600s", "-q"])
    server = subprocess.Popen(
        [str(binary), "-w", "4", "-n", "1000000", "-r", "400", "-b", "3000"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        runs = [tune(server.pid, "on"), tune(server.pid, "off")]
    finally:
        for p in (server, hogs):
            p.terminate()
            p.wait()
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
