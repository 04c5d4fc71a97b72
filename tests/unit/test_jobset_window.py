"""Issue 13: a job set's window (a loop of short-lived jobs that fork their own workers)
counts each CPU-second once, stays within the machine's CPUs, and is judged on the jobs it
finished, not on the CPU it consumed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from schedagent.execution import measure as live
from schedagent.kernel import procstat
from schedagent.models import Features, Slo, Target
from schedagent.profile.classify import features_from_window

# A shell-like loop (the target) runs jobs one after another; each job forks two workers
# that burn CPU for 40 ms and exit, waits for them and exits: grandchildren, reaped by a
# child that the target then reaps, all inside one window.
_JOB_LOOP = """
import os, time
def burn(s):
    end = time.process_time() + s
    while time.process_time() < end:
        pass
while True:
    job = os.fork()
    if job == 0:
        workers = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                burn(0.04)
                os._exit(0)
            workers.append(pid)
        for pid in workers:
            os.waitpid(pid, 0)
        os._exit(0)
    os.waitpid(job, 0)
"""


def _cpu_ns(pid: int) -> int:
    fields = procstat.stat_fields(f"/proc/{pid}/stat")
    assert fields is not None
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@pytest.fixture()
def job_loop() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", _JOB_LOOP])
    try:
        deadline = time.monotonic() + 10
        while _cpu_ns(proc.pid) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the first job has been reaped
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_exited_jobs_cpu_is_counted_once(job_loop: int) -> None:
    target = Target(pid=job_loop)
    before = _cpu_ns(job_loop)
    window = procstat.observe(target, 1.5)
    truth_s = (_cpu_ns(job_loop) - before) / 1e9  # the tree's own CPU, by the kernel
    feats = features_from_window(window, procstat.read_topology())
    measured_s = feats.cpu_util * window.duration_s
    assert feats.cpu_util <= (os.cpu_count() or 1) * live.CPU_SLACK, feats
    # the jobs in flight at either end make the two differ by at most a job or so (0.1 s)
    assert measured_s <= truth_s * 1.25 + 0.15, (measured_s, truth_s)
    assert measured_s >= truth_s * 0.5 - 0.15, (measured_s, truth_s)


def test_a_job_set_is_measured_by_the_jobs_it_finished(job_loop: int) -> None:
    metric = live.metric_for(Slo("makespan", "min", None, "s", "r"))
    assert (metric.name, metric.direction) == ("jobs_per_s", "higher")
    sample = live.measure(Target(pid=job_loop), metric, 1.0)
    assert sample.invalid is None, sample.invalid
    assert sample.value > 1.0  # about 3 processes per 40 ms job pair, minus the slow ones


def _feats(cpu_util: float, cpus: int) -> Features:
    return Features(
        cpu_util, 0.5, 0, 4, 500.0, 10.0, 300.0, 50.0, 0.1, 1, 0, 4, cpus, 1.0, None, None
    )


def test_a_physically_impossible_window_is_invalid() -> None:
    cpus = live.metric_for(Slo("completed_ops_per_s", "max", None, "ops/s", "r"))
    # the recorded case: 3.836 CPUs used on a 2-CPU machine
    problem = live.physical_problem(cpus, 3.836, _feats(3.836, 2))
    assert problem is not None and "3.836 CPUs on a 2-CPU machine" in problem
    assert live.physical_problem(cpus, 1.9, _feats(1.9, 2)) is None
    lat = live.metric_for(Slo("p99_wakeup_latency", "<=", 1000.0, "us", "r"))
    assert live.physical_problem(lat, -1.0, _feats(0.5, 2)) is not None
    assert live.physical_problem(lat, float("nan"), _feats(0.5, 2)) is not None


def _thread(tid: int, tgid: int, run_ms: int) -> procstat.ThreadSample:
    return procstat.ThreadSample(tid, tgid, run_ms * 1_000_000, 0, 1, 0, 0)


def test_a_watched_jobs_own_reaped_workers_are_not_counted_again() -> None:
    """The shell loop's shape, pass by pass: target 10 runs job 20, which runs worker 30
    (100 ms of CPU); both were watched, exited and were reaped inside the window. The
    target's cutime rose by the job's 10 ms and its 100 ms of reaped worker; the job's
    cutime by the worker's 100 ms. All of it was watched: nothing is unseen."""
    w = procstat.Window(1.0)
    for tid, tgid, run_ms in ((10, 10, 5), (20, 20, 10), (30, 30, 100)):
        w.first[tid] = _thread(tid, tgid, 0)
        w.last[tid] = _thread(tid, tgid, run_ms)
    w.tgids_seen = {10, 20, 30}
    w.tgids_exited = {20, 30}
    w.tgids_last = {10}
    w.reaped_first = {10: 0, 20: 0, 30: 0}
    w.reaped_last = {10: 110_000_000, 20: 100_000_000, 30: 0}
    assert w.reaped_unseen_ns() == 0
    # a second worker that lived and died between two passes is unseen: counted once
    w.reaped_last = {10: 160_000_000, 20: 150_000_000, 30: 0}
    assert w.reaped_unseen_ns() == 50_000_000
