"""Issue 17: EEVDF's own knobs on the testbed kernel, and as bench arms beside policies."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from schedagent import services
from schedagent.bench.runner import Arm
from schedagent.kernel import knobs, partial, scx
from schedagent.kernel.proctree import stop_tree
from schedagent.models import Knob, Target
from tests.vm.conftest import report


@pytest.fixture(autouse=True)
def _private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))


def _threads(pid: int) -> dict[int, knobs.ThreadAttr]:
    return {tid: knobs.read_attr(tid) for tid in partial.target_tids(Target(pid=pid))}


def _kernel_view(tid: int) -> tuple[int, int, int]:
    """(policy, nice, rt priority) as the kernel reports them outside sched_getattr."""
    stat = Path(f"/proc/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return os.sched_getscheduler(tid), int(stat[16]), int(stat[37])


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("nice:-10", lambda a, v: a.nice == -10 and v[1] == -10),
        ("slice:1ms", lambda a, v: a.custom_slice and a.runtime_ns == 1_000_000),
        ("fifo:1", lambda a, v: v[0] == knobs.SCHED_FIFO and v[2] == 1),
        ("rr:2", lambda a, v: v[0] == knobs.SCHED_RR and v[2] == 2),
        ("others-idle", lambda a, v: v[0] == knobs.SCHED_IDLE),
    ],
)
def test_each_knob_is_applied_to_every_thread_and_restored_exactly(spec: str, want: object) -> None:
    seq = scx.read_state().enable_seq
    hog = subprocess.Popen(["stress-ng", "--cpu", "2", "--timeout", "120s", "-q"])
    try:
        deadline = time.monotonic() + 120  # stress-ng starts slowly under emulation
        while len(partial.process_tree(hog.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(partial.process_tree(hog.pid)) >= 3, "stress-ng's two workers never started"
        before = _threads(hog.pid)
        session = knobs.KnobSession(Knob.parse(spec))
        session.set_targets([hog.pid])
        session.set_others([hog.pid])
        assert session.problem() is None
        during = {tid: (knobs.read_attr(tid), _kernel_view(tid)) for tid in session.applied}
        report(
            f"knob_{spec}",
            {str(t): [a.policy, a.nice, a.priority, a.runtime_ns] for t, (a, _) in during.items()},
        )
        assert len(during) >= 3, during  # the parent and its two workers
        assert all(want(a, v) for a, v in during.values()), during  # type: ignore[operator]
        assert session.restore() == len(during)
        after = _threads(hog.pid)
        assert {t: after[t] for t in before if t in after} == {
            t: before[t] for t in before if t in after
        }
        # EEVDF knobs never touch sched_ext
        snap = scx.read_state()
        assert snap.state == "disabled" and snap.enable_seq == seq
    finally:
        stop_tree(hog)


def test_bench_runs_knob_arms_beside_eevdf_with_the_cost_to_others() -> None:
    seq = scx.read_state().enable_seq
    arms = [Arm.of_knob("nice:-10"), Arm.of_knob("others-idle")]
    result = services.bench_compare("mixed", arms, runs=2, quick=True)
    report(
        "bench_knobs_mixed",
        [(a.arm, a.verdict, a.valid_runs, a.medians) for a in result.arms],
    )
    by_arm = {a.arm: a for a in result.arms}
    assert set(by_arm) == {"nice:-10", "others-idle"}
    for arm in by_arm.values():
        assert arm.valid_runs == 2, arm.reason
        # the target's gain and the cost to everyone else, side by side
        assert "hog_ops_per_s" in arm.medians and result.primary_metric in arm.medians
    snap = scx.read_state()
    assert snap.state == "disabled" and snap.enable_seq == seq
