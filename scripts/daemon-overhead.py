"""The daemon's own CPU use in steady state, for the notes (run in the testbed, as root).

Starts the mixed workload's server beside CPU hogs and the daemon in auto mode; once the
daemon has tuned, measures its CPU time over 60 s while it watches under EEVDF (or
guards what it kept), then forces the `target` policy in and measures 60 s of guarding.
Prints JSON: percent of one core.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from schedagent.bench import workload
from schedagent.daemon.socketapi import ApiClient

CONFIG = """\
mode: auto
settle_s: 6
budgets: {budget_s: 300, observe_s: 3, window_s: 2, rounds: 3, max_candidates: 1}
targets:
  - name: server
    match: {command: "-w 4 -n 1000000 -r 400"}
"""


def cpu_pct(pid: int, seconds: float) -> float:
    proc = psutil.Process(pid)
    t0, c0 = time.monotonic(), sum(proc.cpu_times()[:2])
    time.sleep(seconds)
    return round(100 * (sum(proc.cpu_times()[:2]) - c0) / (time.monotonic() - t0), 2)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    tmp = Path(tempfile.mkdtemp())
    (tmp / "config.yaml").write_text(CONFIG)
    env = {
        **os.environ,
        "SCHEDAGENT_STATE_DIR": str(tmp / "state"),
        "SCHEDAGENT_SOCKET": str(tmp / "d.sock"),
    }
    os.environ.update(SCHEDAGENT_STATE_DIR=env["SCHEDAGENT_STATE_DIR"])
    binary = workload.build(workload.resolve("mixed"))
    daemon = subprocess.Popen(
        ["schedagent", "daemon", "--config", str(tmp / "config.yaml")], env=env
    )
    procs = [daemon]
    out: dict[str, object] = {"window_s": seconds}
    try:
        while not (tmp / "d.sock").exists():
            time.sleep(0.5)
        procs.append(subprocess.Popen(["stress-ng", "--cpu", "4", "--timeout", "3600s", "-q"]))
        procs.append(
            subprocess.Popen(
                [str(binary), "-w", "4", "-n", "1000000", "-r", "400", "-b", "3000"],
                stdout=subprocess.DEVNULL,
            )
        )
        api = ApiClient(tmp / "d.sock")
        while api.call("daemon_status", {})["targets"]["server"]["phase"] in ("waiting",):
            time.sleep(1)
        while not [r for r in api.call("history", {"limit": 50})["audit"] if r["action"] == "tune"]:
            time.sleep(2)
        out["after_tune"] = api.call("daemon_status", {})["targets"]["server"]["policy"]
        out["cpu_pct_watching"] = cpu_pct(daemon.pid, seconds)
        art = api.call("verify_policy", {"name": "target"})
        api.call("apply", {"target": "server", "policy": art["artifact_id"]})
        out["cpu_pct_guarding_target"] = cpu_pct(daemon.pid, seconds)
        out["still_active"] = api.call("daemon_status", {})["targets"]["server"]["policy"]
        daemon.send_signal(signal.SIGTERM)
        out["exit_code"] = daemon.wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
