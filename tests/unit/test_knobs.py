"""EEVDF's own knobs: parsing, applying to real threads of this host, exact restore."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from schedagent import ops
from schedagent.bench.runner import Arm, is_knob_label
from schedagent.errors import ConfigError
from schedagent.kernel import knobs
from schedagent.kernel.proctree import stop_tree
from schedagent.models import Knob
from schedagent.store import Store

# a process whose second thread starts half a second after the first
LATE_THREAD = (
    "import threading, time\n"
    "time.sleep(0.5)\n"
    "threading.Thread(target=time.sleep, args=(30,)).start()\n"
    "time.sleep(30)\n"
)


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", LATE_THREAD])
    try:
        yield proc
    finally:
        stop_tree(proc)


@pytest.mark.parametrize(
    ("spec", "kind", "value", "label"),
    [
        ("nice:-10", "nice", -10, "nice:-10"),
        ("slice:1ms", "slice", 1_000_000, "slice:1ms"),
        ("slice:250us", "slice", 250_000, "slice:250us"),
        ("fifo:1", "fifo", 1, "fifo:1"),
        ("rr:99", "rr", 99, "rr:99"),
        ("others-idle", "others-idle", 0, "others-idle"),
    ],
)
def test_knob_specs_parse_to_their_kind_value_and_label(
    spec: str, kind: str, value: int, label: str
) -> None:
    knob = Knob.parse(spec)
    assert (knob.kind, knob.value, knob.label) == (kind, value, label)
    assert Arm.of_knob(spec).label == label and is_knob_label(label)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("nice:-21", "nice must be in [-20, 19]"),
        ("slice:50us", "slice must be in [100000, 100000000]"),
        ("slice:2s", "a slice is N[ns|us|ms]"),
        ("fifo:0", "fifo must be in [1, 99]"),
        ("fifo", "needs a value, e.g. fifo:1"),
        ("others-batch:1", "takes no value"),
        ("renice:-5", "expected one of nice:N"),
    ],
)
def test_bad_knobs_say_what_was_expected(spec: str, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        Knob.parse(spec)
    assert says in str(err.value)
    assert not is_knob_label(spec) and is_knob_label("nice:5") and not is_knob_label("vtime")


def test_bench_takes_knob_arms_and_refuses_bad_ones_by_name() -> None:
    args = ops.validate("benchmark", {"workload": "mixed", "knobs": ["slice:1000us"]})
    assert args.knobs == ["slice:1ms"]  # type: ignore[attr-defined]  # BenchArgs
    with pytest.raises(ops.OpError, match=r"knobs\.0: .*nice must be in \[-20, 19\]"):
        ops.validate("benchmark", {"workload": "mixed", "knobs": ["nice:-99"]})
    suite = ops.validate("bench_suite", {})
    assert suite.knobs == ["nice:-10", "fifo:1", "slice:1ms"]  # type: ignore[attr-defined]


def _attrs(pid: int) -> dict[int, knobs.ThreadAttr]:
    from schedagent.kernel import partial
    from schedagent.models import Target

    return {tid: knobs.read_attr(tid) for tid in partial.target_tids(Target(pid=pid))}


@pytest.mark.parametrize(
    ("spec", "check"),
    [
        ("nice:7", lambda a: a.nice == 7 and a.policy == knobs.SCHED_OTHER),
        ("slice:3ms", lambda a: a.custom_slice and a.runtime_ns == 3_000_000),
        ("fifo:3", lambda a: a.policy == knobs.SCHED_FIFO and a.priority == 3),
        ("others-batch", lambda a: a.policy == knobs.SCHED_BATCH),
    ],
)
def test_a_knob_reaches_every_thread_late_ones_too_and_restore_is_exact(
    child: subprocess.Popen[bytes], spec: str, check: object
) -> None:
    before = _attrs(child.pid)
    session = knobs.KnobSession(Knob.parse(spec))
    session.set_targets([child.pid])
    session.set_others([child.pid])
    deadline = time.monotonic() + 10
    while len(_attrs(child.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session.problem() is None  # picks up the thread started after the knob
    now = _attrs(child.pid)
    assert len(now) == 2 and set(session.applied) == set(now)
    assert all(check(a) for a in now.values()), now  # type: ignore[operator]
    assert session.restore() == 2
    after = _attrs(child.pid)
    # the first thread is exactly as it was; the late one is as its creator was
    first = child.pid
    assert after[first] == before[first]
    assert all(
        (a.policy, a.nice, a.priority, a.custom_slice) == (before[first].policy, 0, 0, False)
        for a in after.values()
    )


def test_rt_knobs_are_refused_when_the_rt_throttle_is_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from pathlib import Path

    off = Path(str(tmp_path)) / "sched_rt_runtime_us"
    off.write_text("-1\n")
    monkeypatch.setattr(knobs, "RT_RUNTIME", off)
    with pytest.raises(ConfigError, match="RT throttle is off"):
        knobs.KnobSession(Knob.parse("fifo:1"))
    knobs.KnobSession(Knob.parse("nice:-5"))  # not an RT knob: allowed
    off.write_text("950000\n")
    knobs.KnobSession(Knob.parse("rr:2"))


# a process that holds a knob on a pid, journaled in a store, until it is killed
HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from schedagent.kernel import knobs\n"
    "from schedagent.models import Knob\n"
    "from schedagent.store import Store\n"
    "held = knobs.KnobSession(Knob.parse(sys.argv[2]), journal=Store(Path(sys.argv[1])))\n"
    "held.set_targets([int(sys.argv[3])])\n"
    "print(len(held.applied), flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize("spec", ["nice:-7", "slice:2ms", "fifo:2"])
def test_threads_a_sigkilled_holder_left_under_a_knob_are_restored_from_its_journal(
    child: subprocess.Popen[bytes], tmp_path: object, spec: str
) -> None:
    from pathlib import Path

    from schedagent.execution import engine
    from schedagent.store import Store

    db = Path(str(tmp_path)) / "state.db"
    time.sleep(0.7)  # the child's late thread exists
    before = _attrs(child.pid)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), spec, str(child.pid)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and int(holder.stdout.readline()) == len(before)
        holder.kill()
        holder.wait()
    finally:
        stop_tree(holder)
    knobbed = _attrs(child.pid)
    assert knobbed != before  # the knob outlived its holder: the kernel keeps it
    store = Store(db)
    assert {e.tid for e in store.knob_journal()} == set(before)
    assert engine.recover_knobs(store) == len(before)
    assert _attrs(child.pid) == before  # exactly as they were
    assert store.knob_journal() == []
    assert [e.kind for e in store.events()].count("restored-knobs") == 1


def test_recovery_leaves_a_thread_that_changed_since_and_a_live_holders_threads(
    child: subprocess.Popen[bytes], tmp_path: object
) -> None:
    import os
    from pathlib import Path

    from schedagent.execution import engine
    from schedagent.store import Store

    store = Store(Path(str(tmp_path)) / "state.db")
    mine = knobs.KnobSession(Knob.parse("nice:5"), journal=store)
    mine.set_targets([child.pid])
    assert engine.recover_knobs(store) == 0  # this process holds it: not touched
    assert all(a.nice == 5 for a in _attrs(child.pid).values())
    # the same journal as a dead holder's, after the program set its own nice
    dead = 2**22 + 1  # above pid_max's default: no process has it
    with store._tx() as db:  # re-own the entries by the dead pid
        db.execute("UPDATE knobs SET owner_pid = ?", (dead,))
    os.setpriority(os.PRIO_PROCESS, child.pid, 3)
    assert engine.recover_knobs(store) == 0
    assert knobs.read_attr(child.pid).nice == 3  # the program's own setting stands
    assert store.knob_journal() == []


def test_a_normal_restore_clears_the_journal(
    child: subprocess.Popen[bytes], tmp_path: object
) -> None:
    from pathlib import Path

    from schedagent.store import Store

    store = Store(Path(str(tmp_path)) / "state.db")
    held = knobs.KnobSession(Knob.parse("nice:-3"), journal=store)
    held.set_targets([child.pid])
    assert {e.tid for e in store.knob_journal()} == set(held.before)
    held.restore()
    assert store.knob_journal() == []


def test_a_custom_slice_is_refused_on_a_kernel_that_ignores_it() -> None:
    with pytest.raises(ConfigError, match=r"ignores a custom slice .* since Linux 6\.12"):
        knobs.check_allowed(Knob.parse("slice:1ms"), "6.1.0-28-amd64")
    knobs.check_allowed(Knob.parse("slice:1ms"), "6.12.9+deb13-amd64")
    knobs.check_allowed(Knob.parse("nice:-5"), "6.1.0-28-amd64")  # nice is older than EEVDF
    assert knobs.kernel_version("7.2.13+deb14-amd64") == (7, 2)


def test_the_background_knobs_touch_only_the_competing_work_that_was_named(
    child: subprocess.Popen[bytes], tmp_path: object
) -> None:
    from pathlib import Path

    from schedagent.execution import interventions
    from schedagent.models import Target
    from schedagent.store import Store

    store = Store(Path(str(tmp_path)) / "state.db")
    hog = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with (
            pytest.raises(ConfigError, match="acts on the competing work, and none was named"),
            interventions.knob_session("others-idle", store, Target(pid=child.pid)),
        ):
            pass
        with (
            pytest.raises(Exception, match="other than init"),
            interventions.knob_session("others-idle", store, Target(pid=child.pid), others=[1]),
        ):
            pass
        target_before, hog_before = _attrs(child.pid), knobs.read_attr(hog.pid)
        with interventions.knob_session(
            "others-idle", store, Target(pid=child.pid), others=[hog.pid, child.pid]
        ):
            assert knobs.read_attr(hog.pid).policy == knobs.SCHED_IDLE
            assert _attrs(child.pid) == target_before  # named as "other" too, still the target
        assert knobs.read_attr(hog.pid) == hog_before
    finally:
        stop_tree(hog)


def test_the_planner_offers_the_background_knobs_only_when_the_others_are_named() -> None:
    from dataclasses import replace

    from schedagent.agent import planner
    from tests.unit.test_tune_loop import PROF

    alone = [c.policy for c in planner.knobs(PROF, 6)]
    assert alone == ["nice:-10", "slice:1ms", "fifo:1"]
    named = [c.policy for c in planner.knobs(PROF, 6, others=True)]
    assert named == ["nice:-10", "slice:1ms", "others-batch", "others-idle", "fifo:1"]
    assert planner.knobs(replace(PROF, workload_class="throughput"), 6, others=True) == []


def test_recovery_does_not_depend_on_the_recovering_threads_own_slice(
    child: subprocess.Popen[bytes], tmp_path: object
) -> None:
    """Whether a default slice reads as custom depends on the reader's own slice: a
    recovering process with another slice must still see the knob's state as the knob's."""
    import threading
    from pathlib import Path

    from schedagent.execution import engine
    from schedagent.store import Store

    store = Store(Path(str(tmp_path)) / "state.db")
    before = knobs.read_attr(child.pid)
    held = knobs.KnobSession(Knob.parse("nice:4"), journal=store)
    held.set_targets([child.pid])
    with store._tx() as db:  # the holder died
        db.execute("UPDATE knobs SET owner_pid = ?", (2**22 + 1,))
    result: list[int] = []

    def recover_with_another_slice() -> None:
        me = threading.get_native_id()
        knobs.write_attr(knobs.ThreadAttr(me, knobs.SCHED_OTHER, 0, 0, 7_000_000, True))
        result.append(engine.recover_knobs(store))

    thread = threading.Thread(target=recover_with_another_slice)
    thread.start()
    thread.join()
    assert result == [len(held.before)]
    assert knobs.read_attr(child.pid).nice == before.nice


def test_a_zombie_holder_is_dead() -> None:
    from schedagent.store import pid_alive

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(proc.pid)  # exited, not yet reaped: a zombie holds nothing
    proc.wait()
    assert pid_alive(os.getpid())


# --- the review's holes, each closed and tested -------------------------------------


def _store(tmp_path: object) -> Store:
    from pathlib import Path

    return Store(Path(str(tmp_path)) / "state.db")


def test_a_second_knob_on_a_held_thread_is_refused_and_both_end_exactly(
    child: subprocess.Popen[bytes], tmp_path: object
) -> None:
    store = _store(tmp_path)
    before = knobs.read_attr(child.pid)
    first = knobs.KnobSession(Knob.parse("nice:-10"), journal=store)
    first.set_targets([child.pid])
    second = knobs.KnobSession(Knob.parse("nice:-5"), journal=store)
    second.set_targets([child.pid])
    assert child.pid not in second.applied
    problem = second.problem()
    assert problem is not None and "under another knob (nice:-10, held by pid" in problem
    assert knobs.read_attr(child.pid).nice == -10
    second.restore()  # the second ends first: nothing of its own to write or to clear
    assert knobs.read_attr(child.pid).nice == -10  # still the first's
    assert [(e.tid, e.knob) for e in store.knob_journal()] == [(child.pid, "nice:-10")]
    first.restore()  # then the first: its journal row goes, the thread is back
    assert knobs.read_attr(child.pid) == before and store.knob_journal() == []


def test_a_root_whose_id_names_another_process_now_is_not_touched(
    child: subprocess.Popen[bytes],
) -> None:
    held = knobs.KnobSession(Knob.parse("nice:6"))
    held.roots = {child.pid: (knobs.started_ms(child.pid) or 0) - 5000}  # an older process
    held.refresh()
    assert held.applied == {} and held.roots == {}
    assert knobs.read_attr(child.pid).nice == 0


def test_restore_keeps_what_the_program_set_itself_and_catches_threads_born_late(
    child: subprocess.Popen[bytes], tmp_path: object
) -> None:
    store = _store(tmp_path)
    held = knobs.KnobSession(Knob.parse("nice:7"), journal=store)
    held.set_targets([child.pid])  # only the main thread exists yet
    assert set(held.applied) == {child.pid}
    deadline = time.monotonic() + 10
    while len(_attrs(child.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    late = next(t for t in _attrs(child.pid) if t != child.pid)
    assert knobs.read_attr(late).nice == 7  # inherited, and never refreshed
    os.setpriority(os.PRIO_PROCESS, child.pid, 3)  # the program changes its own nice
    held.restore()
    assert knobs.read_attr(child.pid).nice == 3  # left as the program set it
    assert knobs.read_attr(late).nice == 0  # born under the knob: put back
    assert store.knob_journal() == []


def test_knob_targets_are_checked_process_by_process_and_for_the_caller() -> None:
    from schedagent.execution import interventions

    with pytest.raises(ConfigError, match="schedagent or one of its ancestors"):
        interventions._checked([os.getppid()], None, "cgroup x")
    with pytest.raises(Exception, match="other than init"):
        interventions._checked([1], None, "cgroup init.scope")
    with pytest.raises(ConfigError, match="came from uid 1000"):
        interventions.check_knob("nice:-5", caller_uid=1000)
    with pytest.raises(ConfigError, match="came from uid 1000"):
        interventions.check_knob("fifo:1", caller_uid=1000)
    assert interventions.check_knob("nice:5", caller_uid=1000).value == 5


# a process whose child starts half a second after it
LATE_CHILD = (
    "import subprocess, sys, time\n"
    "time.sleep(0.5)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
    "time.sleep(30)\n"
)


def test_a_process_that_joins_later_is_admitted_as_the_first_were_or_left_alone() -> None:
    """A held target's tree grows (a job forked, a setuid program exec'd): each new
    process is checked as the first ones were, and one refused is never written."""
    from schedagent.execution import interventions
    from schedagent.kernel import partial
    from schedagent.models import Target

    proc = subprocess.Popen([sys.executable, "-c", LATE_CHILD])
    try:
        asked: list[int] = []

        def only_the_root(tgid: int) -> str | None:
            asked.append(tgid)
            return None if tgid == proc.pid else "not the caller's own process"

        before = knobs.read_attr(proc.pid)
        held = knobs.KnobSession(Knob.parse("nice:7"), admit=only_the_root)
        held.set_targets([proc.pid])
        deadline = time.monotonic() + 10
        while len(partial.target_tgids(Target(pid=proc.pid))) < 2:
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        kid = next(t for t in partial.target_tgids(Target(pid=proc.pid)) if t != proc.pid)
        assert held.problem() is None
        assert held.refused == {kid: "not the caller's own process"}
        assert set(held.applied) == {proc.pid} and kid not in held.before
        assert knobs.read_attr(kid).nice == 7  # inherited from its parent at fork
        held.restore()
        assert knobs.read_attr(proc.pid).nice == before.nice
        assert knobs.read_attr(kid).nice == 7  # refused: not written, not even to undo
        assert asked.count(kid) == 1  # asked once, remembered
        # the real admission: the same checks as the first processes got
        why_not = interventions._admission(caller_uid=65534)
        assert why_not(proc.pid) == "gone, or not the caller's own process"
        assert why_not(os.getppid()) == "schedagent or one of its ancestors"
        assert interventions._admission(None)(proc.pid) is None
        assert "not a kernel thread" in (interventions._admission(None)(2) or "")
    finally:
        stop_tree(proc)


def test_a_process_that_changes_owner_is_asked_again_for_its_next_thread(
    child: subprocess.Popen[bytes],
) -> None:
    """Admission is not remembered: a process admitted once (its first thread knobbed)
    and refused later (a setuid exec) gets no knob on the thread it starts next."""
    answers = iter([None])

    def once(tgid: int) -> str | None:
        return next(answers, "now another user's process")

    nice_before = knobs.read_attr(child.pid).nice
    held = knobs.KnobSession(Knob.parse("nice:4"), admit=once)
    held.set_targets([child.pid])  # only the main thread exists yet: admitted
    assert set(held.applied) == {child.pid}
    deadline = time.monotonic() + 10
    while len(_attrs(child.pid)) < 2:
        assert time.monotonic() < deadline, "the second thread never started"
        time.sleep(0.05)
    assert held.problem() is None
    late = next(t for t in _attrs(child.pid) if t != child.pid)
    assert late not in held.before and held.refused == {child.pid: "now another user's process"}
    held.restore()
    assert knobs.read_attr(child.pid).nice == nice_before


def test_a_held_knob_ends_when_the_process_is_asked_to_release_what_it_holds(
    child: subprocess.Popen[bytes], tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from schedagent import services
    from schedagent.execution import engine
    from schedagent.models import Target

    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path))
    before = _attrs(child.pid)
    threading.Timer(0.5, engine.release_in_process, args=("test",)).start()
    started = time.monotonic()
    out = services.hold_knob("nice:-3", Target(pid=child.pid), 60.0, "test")
    assert time.monotonic() - started < 30  # not the 60 s asked for
    assert out["ended"] == "released" and out["not_restored"] == {}
    assert _attrs(child.pid) == before


def test_rollback_ends_a_knob_another_process_holds(
    child: subprocess.Popen[bytes], tmp_path: object
) -> None:
    from schedagent.execution import engine

    db = tmp_path / "state.db"  # type: ignore[operator]
    time.sleep(0.7)
    before = _attrs(child.pid)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), "nice:-8", str(child.pid)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and int(holder.stdout.readline()) == len(before)
        store = Store(db)
        action = engine.release_knob_holders(store, timeout_s=5)
        assert action == "SIGTERM to 1 knob holder(s)"
        assert holder.wait(timeout=10) is not None
    finally:
        stop_tree(holder)
    assert _attrs(child.pid) == before and store.knob_journal() == []
