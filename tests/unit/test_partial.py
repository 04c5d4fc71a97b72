"""Issue 15: one thread scanner (kernel/partial.py) for the canary, the observer and the
bench's stall watch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from schedagent.bench.runner import ProgressWatch
from schedagent.errors import TargetGone
from schedagent.kernel import partial, procstat
from schedagent.kernel.proctree import stop_tree
from schedagent.models import Target

#: a root with two extra threads and one child process (``sleep``); it prints the child's pid
TREE = (
    "import subprocess, threading, time\n"
    "for _ in range(2):\n"
    "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    "kid = subprocess.Popen(['sleep', '600'])\n"
    "print(kid.pid, flush=True)\n"
    "time.sleep(600)\n"
)


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    """(root pid, child pid) of a running tree of 3 + 1 threads."""
    proc = subprocess.Popen([sys.executable, "-c", TREE], text=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    kid = int(proc.stdout.readline())
    yield proc.pid, kid
    stop_tree(proc)


def test_the_scanner_sees_every_thread_of_the_tree(tree: tuple[int, int]) -> None:
    root, kid = tree
    pairs = partial.target_threads(Target(pid=root))
    assert {tgid for tgid, _ in pairs} == {root, kid}
    assert sum(1 for tgid, _ in pairs if tgid == root) == 3  # main and two threads
    assert (kid, kid) in pairs
    assert partial.target_tids(Target(pid=root)) == sorted(tid for _, tid in pairs)


def test_the_bench_stall_watch_uses_the_same_scanner(tree: tuple[int, int]) -> None:
    root, _kid = tree
    watch = ProgressWatch([root, 2**22 + 1])  # a root that does not exist is skipped
    watch.sample(0.0)
    assert sorted(watch.threads) == partial.target_tids(Target(pid=root))
    assert all(track.state in "RSD" and track.run_ns >= 0 for track in watch.threads.values())


def test_read_thread_state_reads_state_and_cpu_time(tree: tuple[int, int]) -> None:
    root, _kid = tree
    state = procstat.read_thread_state(root, root)
    assert state is not None and state[0] in "RSD" and state[1] > 0
    assert procstat.read_thread_state(root, 2**22 + 1) is None


def test_a_missing_pid_is_target_gone() -> None:
    with pytest.raises(TargetGone):
        partial.target_tids(Target(pid=2**22 + 1))
    with pytest.raises(TargetGone):
        partial.process_tree(2**22 + 1)
