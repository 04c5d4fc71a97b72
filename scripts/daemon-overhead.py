"""The daemon's own CPU use in steady state (run in the testbed, as root).

For each count of targets (``--targets 1 10 100``) and each way of observing
(``--observer on off``: the BPF observer, or procfs polling with
``SCHEDAGENT_OBSERVER=off``), it starts that many small servers (a Python loop that
sleeps 20 ms, 50 wakeups a second each), a daemon in observe mode watching each of
them as its own target, and measures the daemon's CPU time over ``--seconds`` once
every target has been profiled. With ``--guard`` it then attaches the ``target``
policy to the first target through the daemon's API and measures the daemon while it
guards that policy (and still watches the others).

With ``--mixed`` the one target is instead the mixed workload's server (4 workers at
400 requests/s of 3 ms) beside 4 CPU hogs: the busy, loaded case the first figure
(34% of a core with procfs polling) was measured on.

Prints one JSON object: percent of one core per configuration, with the observer's
own cost (kernel BPF statistics) as the daemon reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from schedagent.bench import workload
from schedagent.daemon.socketapi import ApiClient

SERVER = "import time\nwhile True: time.sleep(0.02)"


MIXED_ARGS = ["-w", "4", "-n", "1000000", "-r", "400", "-b", "3000"]


def config(n: int, mixed: bool = False) -> str:
    lines = [
        "mode: observe",
        "settle_s: 1",
        "poll_interval_s: 5",
        # the cost of guarding is measured, not its verdicts: a regression never rolls back
        "guard: {window_s: 2, check_interval_s: 5, regression_ratio: 100, regression_windows: 20}",
        "budgets: {observe_s: 2, window_s: 2, rounds: 3}",
        "targets:",
    ]
    if mixed:
        return (
            "\n".join(
                [
                    *lines,
                    "  - name: t000",
                    '    match: {command: "-w 4 -n 1000000 -r 400", user: root}',
                ]
            )
            + "\n"
        )
    for i in range(n):
        lines += [f"  - name: t{i:03d}", f'    match: {{command: "obsbench-{i:03d}", user: root}}']
    return "\n".join(lines) + "\n"


def cpu_pct(pid: int, seconds: float) -> float:
    proc = psutil.Process(pid)
    t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
    time.sleep(seconds)
    return round(100 * (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0), 2)


def wait_for(what: str, check: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(1)


def run(n: int, observer: str, seconds: float, guard: bool, mixed: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp())
    (tmp / "config.yaml").write_text(config(n, mixed))
    env = {
        **os.environ,
        "SCHEDAGENT_STATE_DIR": str(tmp / "state"),
        "SCHEDAGENT_SOCKET": str(tmp / "d.sock"),
        "SCHEDAGENT_OBSERVER": observer,
    }
    if mixed:
        binary = workload.build(workload.resolve("mixed"))
        servers = [
            subprocess.Popen(["stress-ng", "--cpu", "4", "--timeout", "3600s", "-q"]),
            subprocess.Popen([str(binary), *MIXED_ARGS], stdout=subprocess.DEVNULL),
        ]
    else:
        servers = [
            subprocess.Popen([sys.executable, "-c", SERVER, f"obsbench-{i:03d}"]) for i in range(n)
        ]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "schedagent", "daemon", "--config", str(tmp / "config.yaml")],
        env=env,
    )
    out: dict[str, Any] = {
        "targets": "mixed server beside 4 hogs" if mixed else n,
        "observer": observer,
        "window_s": seconds,
    }
    try:
        wait_for(
            "the daemon's socket",
            lambda: (tmp / "d.sock").exists() or daemon.poll() is not None,
            300,
        )
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.returncode} before it listened")
        api = ApiClient(tmp / "d.sock")

        def observed() -> bool:
            phases = [t["phase"] for t in api.call("daemon_status", {})["targets"].values()]
            return all(p == "observed" for p in phases)

        started = time.monotonic()
        wait_for("every target's first profile", observed, 120 + 10 * n)
        out["first_profiles_s"] = round(time.monotonic() - started, 1)
        out["cpu_pct_watching"] = cpu_pct(daemon.pid, seconds)
        out["observer_status"] = api.call("daemon_status", {}).get("observer")
        if guard:
            art = api.call("verify_policy", {"name": "target"})
            api.call("apply", {"target": "t000", "policy": art["artifact_id"]})
            out["cpu_pct_guarding_target"] = cpu_pct(daemon.pid, seconds)
            out["guarded_policy"] = api.call("daemon_status", {})["targets"]["t000"]["policy"]
            out["t000_actions"] = [
                r["action"]
                for r in api.call("history", {"limit": 50})["audit"]
                if r.get("target") == "t000"
            ]
        daemon.send_signal(signal.SIGTERM)
        out["exit_code"] = daemon.wait(timeout=120)
    finally:
        for p in [daemon, *servers]:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--observer", nargs="+", choices=["on", "off"], default=["on", "off"])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--guard", action="store_true", help="also measure guarding `target`")
    ap.add_argument("--mixed", action="store_true", help="one target: the mixed server")
    args = ap.parse_args()
    results = []
    for observer in args.observer:
        for n in [1] if args.mixed else args.targets:
            result = run(n, observer, args.seconds, args.guard, args.mixed)
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    print(json.dumps({"runs": results}))


if __name__ == "__main__":
    main()
