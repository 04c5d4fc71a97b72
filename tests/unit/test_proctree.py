"""Issue 15: one process-tree killer (kernel/proctree.py) for the bench, the compiler
sandbox, the testbed runner, the scripts and the tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from schedagent.kernel.proctree import stop_tree

#: a root that starts one ``sleep`` (in a session of its own when argv[1] is "new"), says
#: the sleeper's pid, and waits
TREE = (
    "import subprocess, sys, time\n"
    "kid = subprocess.Popen(['sleep', '600'], start_new_session=sys.argv[1] == 'new')\n"
    "print(kid.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _gone(pid: int, deadline_s: float = 10.0) -> bool:
    """Whether ``pid`` exits (or is left a zombie for init to reap) before the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def leftovers() -> Iterator[list[psutil.Process]]:
    """Processes a test started; any still running at the end are killed (psutil checks
    that a pid was not reused before it signals)."""
    procs: list[psutil.Process] = []
    yield procs
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue


def _start_tree(
    kid_session: str, *, new_session: bool, leftovers: list[psutil.Process]
) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE, kid_session],
        text=True,
        stdout=subprocess.PIPE,
        start_new_session=new_session,
    )
    assert proc.stdout is not None
    kid = int(proc.stdout.readline())
    leftovers += [psutil.Process(proc.pid), psutil.Process(kid)]
    return proc, kid


def test_a_tree_in_our_own_group_is_killed_by_pid(leftovers: list[psutil.Process]) -> None:
    """A root started without a session of its own shares our process group: its child is
    killed one by one (signalling the group would kill this test too)."""
    proc, kid = _start_tree("same", new_session=False, leftovers=leftovers)
    stop_tree(proc)
    assert proc.returncode == -signal.SIGKILL
    assert _gone(kid), "the root's child outlived it"


def test_a_descendant_that_left_the_group_is_killed_too(leftovers: list[psutil.Process]) -> None:
    """Signalling only the root's process group misses a child in a session of its own."""
    proc, kid = _start_tree("new", new_session=True, leftovers=leftovers)
    stop_tree(proc, signal.SIGTERM, grace_s=5.0)
    assert proc.returncode == -signal.SIGTERM
    assert _gone(kid), "the child that left the root's group outlived it"


def _start_ready(code: str) -> subprocess.Popen[str]:
    """A Python process in a session of its own, once it has printed 'ready'."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], text=True, stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_a_polite_signal_lets_the_process_finish_and_returns_its_output() -> None:
    # its own handler: a child inherits an ignored SIGINT (a shell's background job
    # without job control), and Python then installs none
    proc = _start_ready(
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)\n"
        "except KeyboardInterrupt:\n"
        "    print('results 42')\n"
    )
    out = stop_tree(proc, signal.SIGINT, grace_s=30.0)
    assert proc.returncode == 0
    assert out == "results 42\n"


def test_a_process_that_ignores_the_polite_signal_gets_sigkill() -> None:
    proc = _start_ready(
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    stop_tree(proc, signal.SIGINT, grace_s=0.2)
    assert proc.returncode == -signal.SIGKILL
