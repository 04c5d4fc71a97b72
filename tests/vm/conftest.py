"""Fixtures for VM tests (run inside the testbed, as root, on a sched_ext kernel)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from schedagent.kernel import scx
from schedagent.kernel.proctree import stop_tree  # the VM tests import it from here
from schedagent.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
PROJECT = Path(__file__).resolve().parents[2]
REPORT = PROJECT / "out" / "vm-measurements.json"


@pytest.fixture(autouse=True)
def _sched_ext_clean() -> Iterator[None]:
    """Every VM test starts and must end with sched_ext disabled."""
    snap = scx.read_state()
    if not snap.present:
        pytest.fail(
            "SCHEDAGENT_REQUIRE_VM=1 but this kernel has no /sys/kernel/sched_ext; "
            "run the VM tests with `schedagent sandbox run -- pytest -m vm`"
        )
    assert snap.state == "disabled", f"a scheduler was left active: {snap}"
    yield
    ok, snap = scx.wait_for(lambda s: s.state == "disabled", 10.0)
    assert ok, f"test left sched_ext {snap.state} with {snap.ops}"


@pytest.fixture(autouse=True)
def _no_leftover_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Processes a test started (in this session) and left running are killed after it.

    A CPU hog left behind (stress-ng's workers outlive a SIGKILLed parent, a job set's
    last children outlive theirs) would load every later test and skew its measurements.
    """
    session = os.getsid(0)
    before = set(psutil.pids())
    yield
    left = []
    ours = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    for proc in psutil.process_iter(["pid", "name", "status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if (
                proc.pid in before
                or proc.pid in ours
                or proc.info["status"] == psutil.STATUS_ZOMBIE
                or os.getsid(proc.pid) != session
            ):
                continue
            left.append(proc)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=5)
    if left:
        report(
            f"leftover_processes_{request.node.name}", sorted({str(p.info["name"]) for p in left})
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite store in a temporary directory."""
    db = Store(tmp_path / "state.db")
    yield db
    db.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A target process with three extra threads, for partial-mode tests."""
    code = (
        "import threading, time\n"
        "for _ in range(3):\n"
        "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


@pytest.fixture
def cpu_load() -> Iterator[subprocess.Popen[bytes]]:
    """Two CPU hogs, so there are always runnable tasks."""
    stress = shutil.which("stress-ng")
    assert stress, "stress-ng is part of the testbed image"
    proc = subprocess.Popen([stress, "--cpu", "2", "--timeout", "300s", "-q"])
    yield proc
    stop_tree(proc)


def report(name: str, value: object) -> None:
    """Record a measurement (printed, and kept in out/vm-measurements.json)."""
    print(f"MEASURED {name} = {value}", file=sys.__stderr__, flush=True)
    REPORT.parent.mkdir(exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[name] = value
    REPORT.write_text(json.dumps(data, indent=2, sort_keys=True))


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the schedagent CLI as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "schedagent", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=PROJECT,
        check=False,
    )
