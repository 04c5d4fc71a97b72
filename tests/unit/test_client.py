"""Issue 15: one client decides which process runs an operation, for every command.

Before, each CLI command decided on its own (``status`` never asked the daemon, ``history``
and ``rollback`` did, ``mcp`` decided once at start). Now ``opspec``'s ``where`` and the
socket's answer decide, the same way for every front end.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schedagent import ops
from schedagent.client import Client
from schedagent.daemon.socketapi import ApiServer, DaemonUnavailable
from schedagent.errors import GuardrailViolation

PROJECT = Path(__file__).resolve().parents[2]


class FakeDaemon:
    """The socket's side, scripted: records what reached it, and how long a client waits."""

    def __init__(self, path: Path, *, up: bool = True, fails: BaseException | None = None) -> None:
        self.path, self.up, self.fails = path, up, fails
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.timeouts: list[float] = []

    def connect(self, path: Path, timeout_s: float) -> FakeDaemon:
        assert path == self.path
        self.timeouts.append(timeout_s)
        return self

    def available(self) -> bool:
        return self.up

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((op, args))
        if self.fails is not None:
            raise self.fails
        return {"from": "daemon", "op": op}


def _client(daemon: FakeDaemon) -> Client:
    return Client("test", socket=daemon.path, connect=daemon.connect)


def _refused() -> DaemonUnavailable:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as err:
            raise DaemonUnavailable("no daemon answers") from err
    except DaemonUnavailable as outer:
        return outer


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))


def test_with_a_daemon_status_and_privileged_operations_go_to_it(tmp_path: Path) -> None:
    daemon = FakeDaemon(tmp_path / "s.sock")
    client = _client(daemon)
    assert client.call("status", {}) == {"from": "daemon", "op": "status"}
    assert client.served_by == "daemon"
    client.call("rollback", {})
    client.call("benchmark", {"workload": "wakelat", "policies": ["vtime"]})
    assert [op for op, _ in daemon.calls] == ["status", "rollback", "benchmark"]
    # a reply is awaited as long as the operation may run: an hour, a long bench and more
    assert daemon.timeouts[:2] == [3600.0, 3600.0] and daemon.timeouts[2] > 86_400


def test_without_a_daemon_status_runs_here(tmp_path: Path) -> None:
    client = _client(FakeDaemon(tmp_path / "s.sock", up=False))
    out = client.call("status", {})
    assert client.served_by == "local" and "sched_ext" in out and "from" not in out


def test_a_local_operation_never_goes_to_the_daemon(tmp_path: Path) -> None:
    daemon = FakeDaemon(tmp_path / "s.sock")
    client = _client(daemon)
    out = client.call("doctor", {})
    assert daemon.calls == [] and client.served_by == "local" and "checks" in out


def test_a_daemon_operation_without_a_daemon_is_a_clear_error(tmp_path: Path) -> None:
    client = _client(FakeDaemon(tmp_path / "s.sock", up=False))
    with pytest.raises(DaemonUnavailable, match="no daemon socket answers at .*approve talks"):
        client.call("approve", {"id": 3})


def test_a_refused_connection_falls_back_once_a_lost_reply_does_not(tmp_path: Path) -> None:
    """A stale socket file (nobody listening): nothing ran, so this process runs it. A
    daemon that took the request and died may have run it: never run it twice."""
    stale = _client(FakeDaemon(tmp_path / "s.sock", fails=_refused()))
    assert "sched_ext" in stale.call("status", {}) and stale.served_by == "local"
    lost = DaemonUnavailable("closed the connection without a reply")
    died = _client(FakeDaemon(tmp_path / "s.sock", fails=lost))
    with pytest.raises(DaemonUnavailable, match="without a reply"):
        died.call("status", {})


def test_a_user_the_socket_refuses_reads_here_but_changes_nothing(tmp_path: Path) -> None:
    refusal = GuardrailViolation("refused: uid 1000 is neither root nor in group 'schedagent'")
    client = _client(FakeDaemon(tmp_path / "s.sock", fails=refusal))
    assert "sched_ext" in client.call("status", {}) and client.served_by == "local"
    with pytest.raises(GuardrailViolation, match="neither root nor in group"):
        client.call("rollback", {})


def test_bad_arguments_are_refused_before_they_reach_the_daemon(tmp_path: Path) -> None:
    daemon = FakeDaemon(tmp_path / "s.sock")
    with pytest.raises(ops.OpError, match="exactly one of pid or cgroup"):
        _client(daemon).call("tune", {"pid": 5, "cgroup": "x"})
    assert daemon.calls == []


@contextlib.contextmanager
def _daemon_socket(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A real socket server that answers like the daemon, and records the operations."""
    sock, seen = tmp_path / "api.sock", []

    def handler(op: str, args: dict[str, Any], actor: str) -> dict[str, Any]:
        seen.append(op)
        if op == "daemon_status":
            return {
                "pid": 4242,
                "mode": "observe",
                "uptime_s": 9.0,
                "rollbacks_total": 0,
                "targets": {"web": {"policy": "eevdf", "phase": "watching"}},
            }
        return ops.call(op, args, actor)

    server = ApiServer(sock, "no-such-group-here", handler)
    server.start()
    try:
        yield sock, seen
    finally:
        server.stop()


def _cli(*args: str, socket: Path, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SCHEDAGENT_STATE_DIR": str(state), "SCHEDAGENT_SOCKET": str(socket)}
    return subprocess.run(
        [sys.executable, "-m", "schedagent", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT,
        timeout=120,
        check=False,
    )


def test_the_status_command_asks_a_running_daemon(tmp_path: Path) -> None:
    """`status` used to read the local store even with a daemon holding policies."""
    with _daemon_socket(tmp_path) as (sock, seen):
        out = _cli("status", "--json", socket=sock, state=tmp_path / "state")
        text = _cli("status", socket=sock, state=tmp_path / "state")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert "sched_ext" in data and data["daemon"]["pid"] == 4242
    assert "daemon: pid 4242, mode observe" in text.stdout
    assert seen == ["status", "daemon_status"] * 2


def test_a_local_command_does_not_ask_the_daemon(tmp_path: Path) -> None:
    with _daemon_socket(tmp_path) as (sock, seen):
        out = _cli(
            "policies",
            "verify",
            str(tmp_path / "missing.bpf.c"),
            socket=sock,
            state=tmp_path / "state",
        )
    assert out.returncode == 14 and "missing.bpf.c" in out.stderr
    assert seen == []
