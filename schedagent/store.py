"""Persistent state in SQLite: the active policy, events, quarantine and audit.

Every write is its own transaction, so a crash never loses what was already
reported. ``recover()`` runs at start-up: it finds an active record whose owner
died, notes that the kernel fell back to EEVDF, and gives any threads left on
SCHED_EXT their previous policy back.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from schedagent.config import state_dir
from schedagent.errors import StoreUnavailable

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS active (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    policy TEXT NOT NULL, source_hash TEXT NOT NULL, owner_pid INTEGER NOT NULL,
    enable_seq INTEGER NOT NULL, target TEXT, tunables TEXT NOT NULL, started REAL NOT NULL,
    stats TEXT NOT NULL DEFAULT '[]', stats_ts REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS switched (
    tid INTEGER PRIMARY KEY, policy INTEGER NOT NULL, priority INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS knobs (
    tid INTEGER PRIMARY KEY, owner_pid INTEGER NOT NULL, knob TEXT NOT NULL,
    before TEXT NOT NULL, after TEXT NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL,
    policy TEXT, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    policy TEXT NOT NULL, source_hash TEXT NOT NULL, kernel TEXT NOT NULL,
    reason TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (policy, source_hash, kernel));
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, policy TEXT NOT NULL,
    workload_class TEXT NOT NULL, verdict TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS verified (
    artifact_id TEXT PRIMARY KEY, policy TEXT NOT NULL, spec TEXT NOT NULL,
    source_hash TEXT NOT NULL, kernel TEXT NOT NULL, tunables TEXT NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS proposals (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, target TEXT NOT NULL,
    policy TEXT NOT NULL, tunables TEXT NOT NULL, evidence TEXT NOT NULL,
    status TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
    action TEXT NOT NULL, args TEXT NOT NULL, result TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class ActiveRecord:
    """The policy schedagent has loaded, and which process holds its link."""

    policy: str
    source_hash: str
    owner_pid: int
    enable_seq: int
    target: str | None
    tunables: dict[str, int]
    started: float


@dataclass(frozen=True, slots=True)
class Event:
    """One load/unload/guard event."""

    id: int
    ts: float
    kind: str
    policy: str | None
    detail: dict[str, object]


@dataclass(frozen=True, slots=True)
class KnobEntry:
    """A thread an EEVDF knob changed: what it had, and what the knob made it."""

    tid: int
    owner_pid: int
    knob: str
    before: dict[str, int]
    after: dict[str, int]
    ts: float


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A policy that failed on this kernel, and why."""

    policy: str
    source_hash: str
    kernel: str
    reason: str
    ts: float


@dataclass(frozen=True, slots=True)
class VerifiedArtifact:
    """A policy source and tunables that passed the gates and the kernel verifier."""

    artifact_id: str
    policy: str
    spec: str  # what the engine resolves: a name or a staged path
    source_hash: str
    kernel: str
    tunables: dict[str, int]
    ts: float

    @staticmethod
    def make_id(source_hash: str, kernel: str, tunables: dict[str, int]) -> str:
        """The id is a hash of exactly what passed: source, kernel and tunables."""
        key = f"{source_hash}|{kernel}|{json.dumps(tunables, sort_keys=True)}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]


def _reason(err: BaseException) -> str:
    """sqlite's or the OS's own words, which never include the file's content."""
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


class Store:
    """The SQLite store. One connection per instance; safe to reopen after a crash."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "schedagent.db"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as err:
            raise StoreUnavailable(str(self.path), _reason(err)) from err
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)  # idempotent DDL; executescript commits by itself
            with self._tx() as db:
                db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except sqlite3.Error as err:
            self._db.close()
            raise StoreUnavailable(str(self.path), _reason(err)) from err

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    # --- active policy --------------------------------------------------------------

    def set_active(self, rec: ActiveRecord) -> None:
        """Record the loaded policy (replacing any previous record)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO active (id, policy, source_hash, owner_pid, "
                "enable_seq, target, tunables, started) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.policy,
                    rec.source_hash,
                    rec.owner_pid,
                    rec.enable_seq,
                    rec.target,
                    json.dumps(rec.tunables),
                    rec.started,
                ),
            )

    def active(self) -> ActiveRecord | None:
        """The active record, if any."""
        row = self._db.execute(
            "SELECT policy, source_hash, owner_pid, enable_seq, target, "
            "tunables, started FROM active WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        return ActiveRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6])

    def set_active_stats(self, stats: list[int]) -> None:
        """Publish the active scheduler's counters (read by ``policies show``)."""
        with self._tx() as db:
            db.execute(
                "UPDATE active SET stats = ?, stats_ts = ? WHERE id = 1",
                (json.dumps(stats), time.time()),
            )

    def active_stats(self) -> tuple[list[int], float]:
        """The last published counters and when they were published."""
        row = self._db.execute("SELECT stats, stats_ts FROM active WHERE id = 1").fetchone()
        return (json.loads(row[0]), row[1]) if row else ([], 0.0)

    def clear_active(self) -> None:
        """Forget the active policy."""
        with self._tx() as db:
            db.execute("DELETE FROM active")

    # --- partial-mode journal -------------------------------------------------------

    def record_switched(self, tasks: list[tuple[int, int, int]]) -> None:
        """Journal threads moved to SCHED_EXT with their previous (policy, priority)."""
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO switched VALUES (?, ?, ?)", tasks)

    def switched(self) -> list[tuple[int, int, int]]:
        """Threads still journaled as moved."""
        return [tuple(r) for r in self._db.execute("SELECT tid, policy, priority FROM switched")]

    def clear_switched(self) -> None:
        """Forget the journal (after restoring)."""
        with self._tx() as db:
            db.execute("DELETE FROM switched")

    # --- EEVDF knob journal -------------------------------------------------------------

    def record_knob(
        self, tid: int, knob: str, before: dict[str, int], after: dict[str, int]
    ) -> None:
        """Journal a thread's scheduling state before this process changes it with ``knob``
        (``after``: what the knob makes it), so a crash still gets it back."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO knobs VALUES (?, ?, ?, ?, ?, ?)",
                (tid, os.getpid(), knob, json.dumps(before), json.dumps(after), time.time()),
            )

    def knob_journal(self) -> list[KnobEntry]:
        """Every thread still journaled as changed by a knob, by any process."""
        rows = self._db.execute("SELECT tid, owner_pid, knob, before, after, ts FROM knobs")
        return [KnobEntry(r[0], r[1], r[2], json.loads(r[3]), json.loads(r[4]), r[5]) for r in rows]

    def knob_on(self, tid: int) -> str | None:
        """The knob a live session holds on this thread (with its holder), or None."""
        row = self._db.execute("SELECT knob, owner_pid FROM knobs WHERE tid = ?", (tid,)).fetchone()
        if row is None or not pid_alive(row[1]):
            return None
        return f"{row[0]}, held by pid {row[1]}"

    def clear_knobs(self, tids: list[int], owner_pid: int | None = None) -> None:
        """Forget these threads' entries (after restoring them); only ``owner_pid``'s
        (default: this process's)."""
        owner = os.getpid() if owner_pid is None else owner_pid
        with self._tx() as db:
            db.executemany(
                "DELETE FROM knobs WHERE tid = ? AND owner_pid = ?", [(t, owner) for t in tids]
            )

    # --- events, quarantine, audit ----------------------------------------------------

    def add_event(self, kind: str, policy: str | None, **detail: object) -> int:
        """Append an event; return its id."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events (ts, kind, policy, detail) VALUES (?, ?, ?, ?)",
                (time.time(), kind, policy, json.dumps(detail, default=str)),
            )
            return int(cur.lastrowid or 0)

    def events(self, limit: int = 50) -> list[Event]:
        """The most recent events, oldest first."""
        rows = self._db.execute(
            "SELECT id, ts, kind, policy, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in reversed(rows)]

    def quarantine(self, policy: str, source_hash: str, kernel: str, reason: str) -> None:
        """Quarantine a policy build on this kernel."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO quarantine VALUES (?, ?, ?, ?, ?)",
                (policy, source_hash, kernel, reason, time.time()),
            )

    def quarantined(self, policy: str, source_hash: str, kernel: str) -> QuarantineEntry | None:
        """The quarantine entry for this exact build on this kernel, if any."""
        row = self._db.execute(
            "SELECT policy, source_hash, kernel, reason, ts FROM quarantine "
            "WHERE policy = ? AND source_hash = ? AND kernel = ?",
            (policy, source_hash, kernel),
        ).fetchone()
        return QuarantineEntry(*row) if row else None

    def quarantine_list(self) -> list[QuarantineEntry]:
        """Every quarantined policy."""
        return [
            QuarantineEntry(*r)
            for r in self._db.execute(
                "SELECT policy, source_hash, kernel, reason, ts FROM quarantine ORDER BY ts"
            )
        ]

    def unquarantine(self, policy: str) -> int:
        """Remove a policy from quarantine; return how many entries were removed."""
        with self._tx() as db:
            return db.execute("DELETE FROM quarantine WHERE policy = ?", (policy,)).rowcount

    def add_verdict(self, policy: str, workload_class: str, verdict: str, **detail: object) -> None:
        """Record an A/B verdict for a policy on a class (better, worse, no-difference; also
        insufficient or invalid, which ``verdict_summary`` does not count)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO verdicts (ts, policy, workload_class, verdict, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (time.time(), policy, workload_class, verdict, json.dumps(detail, default=str)),
            )

    def verdict_summary(self, policy: str) -> dict[str, dict[str, int]]:
        """``{class: {"wins": n, "losses": n, "ties": n}}`` for one policy.

        Only decided comparisons count: ``insufficient`` (too few samples to reach alpha) and
        ``invalid`` runs are no evidence of a tie (issue 13)."""
        out: dict[str, dict[str, int]] = {}
        for cls, verdict, n in self._db.execute(
            "SELECT workload_class, verdict, COUNT(*) FROM verdicts WHERE policy = ? "
            "GROUP BY workload_class, verdict",
            (policy,),
        ):
            key = {"better": "wins", "worse": "losses", "no-difference": "ties"}.get(verdict)
            if key is None:
                continue
            out.setdefault(cls, {"wins": 0, "losses": 0, "ties": 0})[key] += n
        return out

    def add_verified(self, art: VerifiedArtifact) -> None:
        """Remember that a source, with these tunables, passed every gate on this kernel."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO verified VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    art.artifact_id,
                    art.policy,
                    art.spec,
                    art.source_hash,
                    art.kernel,
                    json.dumps(art.tunables, sort_keys=True),
                    art.ts,
                ),
            )

    def verified(self, artifact_id: str) -> VerifiedArtifact | None:
        """A verified artifact by id, or None."""
        row = self._db.execute(
            "SELECT * FROM verified WHERE artifact_id = ?", (artifact_id,)
        ).fetchone()
        return (
            None
            if row is None
            else VerifiedArtifact(
                row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6]
            )
        )

    def add_proposal(
        self, target: str, policy: str, tunables: dict[str, int], evidence: dict[str, object]
    ) -> int:
        """A plan waiting for ``schedagent approve``; returns its id."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO proposals (ts, target, policy, tunables, evidence, "
                "status) VALUES (?, ?, ?, ?, ?, 'pending')",
                (
                    time.time(),
                    target,
                    policy,
                    json.dumps(tunables),
                    json.dumps(evidence, default=str),
                ),
            )
            return int(cur.lastrowid or 0)

    def proposals(self, status: str | None = None) -> list[dict[str, object]]:
        """Proposals, oldest first, optionally only those with ``status``."""
        rows = self._db.execute(
            "SELECT id, ts, target, policy, tunables, evidence, status FROM proposals "
            + ("WHERE status = ? " if status else "")
            + "ORDER BY id",
            (status,) if status else (),
        ).fetchall()
        return [
            {
                "id": r[0],
                "ts": r[1],
                "target": r[2],
                "policy": r[3],
                "tunables": json.loads(r[4]),
                "evidence": json.loads(r[5]),
                "status": r[6],
            }
            for r in rows
        ]

    def set_proposal_status(self, proposal_id: int, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE proposals SET status = ? WHERE id = ?", (status, proposal_id))

    def kv_get(self, key: str) -> object:
        """A JSON value stored under ``key``, or None."""
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def kv_set(self, key: str, value: object) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value, default=str))
            )

    def audit(
        self, actor: str, action: str, args: dict[str, object], result: dict[str, object]
    ) -> None:
        """Record who asked for what, and the result."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO audit (ts, actor, action, args, result) VALUES (?, ?, ?, ?, ?)",
                (
                    time.time(),
                    actor,
                    action,
                    json.dumps(args, default=str),
                    json.dumps(result, default=str),
                ),
            )

    def audit_records(self, limit: int = 50) -> list[dict[str, object]]:
        """Recent audit records, oldest first."""
        rows = self._db.execute(
            "SELECT ts, actor, action, args, result FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [
            {
                "ts": r[0],
                "actor": r[1],
                "action": r[2],
                "args": json.loads(r[3]),
                "result": json.loads(r[4]),
            }
            for r in reversed(rows)
        ]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and has not exited (a zombie, dead but not
    yet reaped by its parent, holds nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
