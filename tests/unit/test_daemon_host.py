"""Issue 15: the execution-side reads the daemon uses, on fake procfs trees.

The starvation scan and the socket peer's groups moved out of ``daemon/`` into
``kernel/starvation.py`` and ``kernel/peers.py``; the daemon reaches them through
``execution/host.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from schedagent.execution import host
from schedagent.kernel import peers, starvation

MS = 1_000_000  # ns


def _thread(root: Path, tid: int, wait_ns: int, slices: int, nice: int = 0) -> None:
    task = root / str(tid) / "task" / str(tid)
    task.mkdir(parents=True, exist_ok=True)
    (task / "schedstat").write_text(f"0 {wait_ns} {slices}\n")
    # proc(5) stat: pid (comm) state, then fields 4.. ; nice is field 19 (index 16 after comm)
    fields = ["S"] + ["0"] * 15 + [str(nice)] + ["0"] * 10
    (root / str(tid) / "stat").write_text(f"{tid} (t{tid}) " + " ".join(fields) + "\n")


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(starvation, "PROC_ROOT", tmp_path)
    monkeypatch.setattr(peers, "PROC_ROOT", tmp_path)
    return tmp_path


def _scan_with(
    proc: Path,
    before: dict[int, tuple[int, int, int]],
    after: dict[int, tuple[int, int, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> starvation.Starvation:
    """Scan over a window in which each tid's (wait_ns, slices, nice) goes before -> after."""
    for tid, (wait, slices, nice) in before.items():
        _thread(proc, tid, wait, slices, nice)

    def window(_s: float) -> None:
        for tid, (wait, slices, nice) in after.items():
            _thread(proc, tid, wait, slices, nice)

    monkeypatch.setattr(time, "sleep", window)
    return host.starvation_scan(1.0, 2000.0)


def test_the_scan_names_the_thread_that_waited_longest_for_its_niceness(
    proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worst = _scan_with(
        proc,
        {10: (0, 0, 0), 11: (0, 0, 19), 12: (0, 0, 0)},
        {
            10: (3000 * MS, 1, 0),  # 3 s per slice at nice 0: starved
            11: (6000 * MS, 1, 19),  # 6 s at nice 19: within its 8 s
            12: (10 * MS, 10, 0),
        },  # 1 ms per slice: fine
        monkeypatch,
    )
    assert worst.wait_ms > worst.allowed_ms
    assert worst == (3000.0, 10, 2000.0)


def test_a_nice_thread_within_its_allowance_is_not_starved(
    proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worst = _scan_with(proc, {11: (0, 0, 19)}, {11: (6000 * MS, 1, 19)}, monkeypatch)
    assert worst.tid == 11 and worst.allowed_ms == 8000.0
    assert worst.wait_ms <= worst.allowed_ms


def test_threads_born_during_the_window_and_quiet_ones_are_not_reported(
    proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worst = _scan_with(
        proc, {12: (0, 0, 0)}, {12: (5 * MS, 5, 0), 13: (9000 * MS, 1, 0)}, monkeypatch
    )
    assert worst == (0.0, None, 2000.0)


def test_a_peers_supplementary_groups_are_read_and_a_gone_peer_has_none(proc: Path) -> None:
    (proc / "42").mkdir()
    (proc / "42" / "status").write_text("Name:\tx\nGroups:\t4 24 1000 \nNSpid:\t42\n")
    assert host.peer_groups(42) == {4, 24, 1000}
    assert host.peer_groups(43) == set()
