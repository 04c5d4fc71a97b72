"""The SQLite store: transactional writes, reopen after a crash, recovery."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from schedagent.execution import engine
from schedagent.store import ActiveRecord, Store


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_records_survive_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.add_event("loaded", "p", enable_seq=3)
    store.quarantine("p", "abc", "kern", "stall")
    store.close()  # as if the process died here
    again = Store(tmp_path / "s.db")
    assert [e.kind for e in again.events()] == ["loaded"]
    assert again.quarantined("p", "abc", "kern") is not None
    assert again.quarantined("p", "abc", "other-kernel") is None
    again.close()


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(RuntimeError), store._tx() as db:
        db.execute("INSERT INTO events (ts, kind, policy, detail) VALUES (1, 'x', NULL, '{}')")
        raise RuntimeError("crash mid-write")
    assert store.events() == []
    store.close()


def test_recover_clears_a_dead_owner(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.set_active(ActiveRecord("p", "h", _dead_pid(), 1, None, {"x": 1}, time.time()))
    note = engine.recover(store)
    assert note is not None and "died" in note
    assert store.active() is None
    assert store.events()[-1].kind == "recovered"
    store.close()


def test_recover_leaves_a_live_owner_alone(tmp_path: Path) -> None:
    import os

    store = Store(tmp_path / "s.db")
    store.set_active(ActiveRecord("p", "h", os.getpid(), 1, None, {}, time.time()))
    assert engine.recover(store) is None
    assert store.active() is not None
    store.close()
