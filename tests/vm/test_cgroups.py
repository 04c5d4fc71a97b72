"""Issue 17: respect the host's cgroup CPU controls.

A whole-system policy without cgroup bandwidth support is refused on a host with a
cpu.max-limited cgroup, or confined to partial mode on its target; vtime, which
implements sched_ext's cgroup weight ops, shares the CPUs between two sibling cgroups
by their cpu.weight, and fifo, which does not, shares them evenly (the control that
shows the measurement can tell the two apart).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from schedagent.errors import HostControlsUnsupported
from schedagent.execution import engine
from schedagent.kernel import partial, scx, toolchain
from schedagent.kernel.cgroupfs import CGROUP_ROOT, scan_controls
from schedagent.kernel.loader import BpfObject, LoadOptions, attach
from schedagent.kernel.proctree import stop_tree
from schedagent.models import Target
from schedagent.policy.repo import resolve
from schedagent.store import Store
from tests.vm.conftest import report

#: the test's own subtree under the cgroup root
PARENT = CGROUP_ROOT / "sa-issue17"
#: CPU time (both cgroups together) a share measurement waits for, and its deadline
MEASURE_CPU_US = 10_000_000
MEASURE_DEADLINE_S = 180.0


def _write(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def cgroups() -> Iterator[Callable[[str], Path]]:
    """Make child cgroups of PARENT with the cpu controller on; remove them after."""
    if not (CGROUP_ROOT / "cgroup.controllers").exists():
        subprocess.run(["mount", "-t", "cgroup2", "none", str(CGROUP_ROOT)], check=True)
    assert "cpu" in (CGROUP_ROOT / "cgroup.controllers").read_text().split()
    _write(CGROUP_ROOT / "cgroup.subtree_control", "+cpu")
    PARENT.mkdir(exist_ok=True)
    _write(PARENT / "cgroup.subtree_control", "+cpu")
    made: list[Path] = []

    def make(name: str) -> Path:
        path = PARENT / name
        path.mkdir()
        made.append(path)
        return path

    yield make
    for path in [*reversed(made), PARENT]:
        deadline = time.monotonic() + 10
        while path.exists():
            try:
                path.rmdir()
            except OSError:  # a killed spinner is still leaving
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def spinners() -> Iterator[Callable[[Path, int], list[subprocess.Popen[bytes]]]]:
    """Start CPU spinners that join a cgroup before they spin; killed after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def spin(cgroup: Path, count: int) -> list[subprocess.Popen[bytes]]:
        procs = [
            subprocess.Popen(
                [
                    "sh",
                    "-c",
                    f'echo $$ > "{cgroup}/cgroup.procs" && exec sh -c "while :; do :; done"',
                ]
            )
            for _ in range(count)
        ]
        started.extend(procs)
        deadline = time.monotonic() + 30
        while len((cgroup / "cgroup.procs").read_text().split()) < count:
            assert time.monotonic() < deadline, f"spinners did not join {cgroup}"
            time.sleep(0.05)
        return procs

    yield spin
    for proc in started:
        stop_tree(proc)


def _usage_us(cgroup: Path) -> int:
    for line in (cgroup / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value)
    raise AssertionError(f"no usage_usec in {cgroup}/cpu.stat")


def _share_ratio(heavy: Path, light: Path) -> tuple[float, int, int]:
    """heavy/light CPU time over a window that ends once both together used MEASURE_CPU_US."""
    h0, l0 = _usage_us(heavy), _usage_us(light)
    deadline = time.monotonic() + MEASURE_DEADLINE_S
    while (_usage_us(heavy) - h0) + (_usage_us(light) - l0) < MEASURE_CPU_US:
        assert time.monotonic() < deadline, "the spinners got too little CPU to measure"
        time.sleep(0.2)
    dh, dl = _usage_us(heavy) - h0, _usage_us(light) - l0
    return dh / max(dl, 1), dh, dl


def test_whole_system_policy_without_bandwidth_support_is_refused_on_a_cpu_max_host(
    store: Store,
    cgroups: Callable[[str], Path],
    spinners: Callable[[Path, int], list[subprocess.Popen[bytes]]],
) -> None:
    limited = cgroups("limited")
    _write(limited / "cpu.max", "50000 100000")
    spinners(limited, 1)
    found = {c.cgroup: c for c in scan_controls().controls}
    assert found["sa-issue17/limited"].quota_us == 50000, found
    before = scx.read_state()
    with pytest.raises(HostControlsUnsupported) as err:
        engine.run_policy(engine.RunRequest("fifo", {}, duration_s=5.0), store)
    after = scx.read_state()
    assert "'sa-issue17/limited' has cpu.max 50000 100000" in str(err.value)
    assert err.value.needed == ["bandwidth"] and "Fix:" in str(err.value)
    # refused before attach: sched_ext was never enabled for it
    assert after.state == "disabled" and after.enable_seq == before.enable_seq
    assert store.events()[-1].kind == "refused"


def test_whole_system_request_with_a_target_is_confined_to_partial_mode(
    store: Store,
    cgroups: Callable[[str], Path],
    spinners: Callable[[Path, int], list[subprocess.Popen[bytes]]],
    sleeper: subprocess.Popen[bytes],
) -> None:
    limited = cgroups("limited")
    _write(limited / "cpu.max", "50000 100000")
    (spinner,) = spinners(limited, 1)
    seen: dict[str, object] = {}

    def attached(outcome: engine.RunOutcome) -> None:
        seen["state"] = scx.read_state()
        seen["target_on_ext"] = [
            partial.on_ext(t) for t in partial.target_tids(Target(pid=sleeper.pid))
        ]
        seen["spinner_on_ext"] = partial.on_ext(spinner.pid)
        seen["confined"] = outcome.confined

    req = engine.RunRequest("fifo", {}, Target(pid=sleeper.pid), duration_s=3.0, switch_all=True)
    outcome = engine.run_policy(req, store, attached)
    state = seen["state"]
    assert isinstance(state, scx.ScxState)
    assert state.state == "enabled" and state.ops == "fifo"
    assert not state.switch_all, "a whole-system request ran on every task despite cpu.max"
    assert seen["target_on_ext"] == [True] * 4 and seen["spinner_on_ext"] is False
    assert "partial mode" in outcome.confined and "cpu.max 50000 100000" in outcome.confined
    assert "bandwidth" in outcome.confined and outcome.switched_threads == 4
    assert outcome.reason == "duration" and outcome.final_state == "disabled"
    loaded = [e for e in store.events() if e.kind == "loaded"][-1]
    assert loaded.detail["confined"] == outcome.confined


@contextlib.contextmanager
def _fifo_whole_system() -> Iterator[None]:
    """fifo on every task through the loader alone: the engine would (rightly) refuse it
    on this host, and this is the control that shows a weight-oblivious policy."""
    policy = resolve("fifo")
    assert policy.meta is not None and not policy.meta.cgroup
    obj = BpfObject(toolchain.compile_source(policy.source).path, "fifo")
    try:
        sched = attach(obj, LoadOptions(policy.resolve_tunables({})))
        try:
            yield
        finally:
            sched.detach()
    finally:
        obj.close()


def test_vtime_shares_cpu_by_cgroup_weight_and_fifo_does_not(
    store: Store,
    cgroups: Callable[[str], Path],
    spinners: Callable[[Path, int], list[subprocess.Popen[bytes]]],
) -> None:
    heavy, light = cgroups("heavy"), cgroups("light")
    _write(heavy / "cpu.weight", "400")
    _write(light / "cpu.weight", "100")
    spinners(heavy, 2)
    spinners(light, 2)
    with engine.session(engine.RunRequest("vtime", {}), store) as sess:
        snap = scx.read_state()
        assert snap.state == "enabled" and snap.ops == "vtime" and snap.switch_all
        assert sess.outcome.confined == ""
        vtime_ratio, dh, dl = _share_ratio(heavy, light)
        weighted = sess.stats()[3]  # cgroup_weighted: charges scaled by a cgroup's weight
        assert sess.problem() is None
    with _fifo_whole_system():
        snap = scx.read_state()
        assert snap.state == "enabled" and snap.ops == "fifo" and snap.switch_all
        fifo_ratio, fh, fl = _share_ratio(heavy, light)
    report("cgroup_weight_400_100_vtime_ratio", round(vtime_ratio, 2))
    report("cgroup_weight_400_100_fifo_ratio", round(fifo_ratio, 2))
    report("cgroup_weight_usage_us", {"vtime": [dh, dl], "fifo": [fh, fl]})
    assert weighted > 0, "vtime never charged a task by its cgroup's weight"
    assert vtime_ratio > 2.0, f"vtime gave the 400-weight cgroup {vtime_ratio:.2f}x the CPU"
    assert 0.6 < fifo_ratio < 1.6, f"fifo gave the 400-weight cgroup {fifo_ratio:.2f}x the CPU"
