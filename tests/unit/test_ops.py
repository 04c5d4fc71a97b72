"""Issue 15: one operations table. Every operation declared once in ``opspec`` (pure), bound
once in ``ops``; behaviour that used to live in one front end (``--keep``, bench records)
is an operation every front end reaches."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from schedagent import ops, opspec, services
from schedagent.errors import GuardrailViolation
from schedagent.execution import engine
from schedagent.models import Target
from schedagent.store import Store, VerifiedArtifact

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SCHEDAGENT_SOCKET", str(tmp_path / "no-daemon.sock"))


def test_the_spec_module_is_pure() -> None:
    """opspec may be read by agent code: it imports nothing that reaches the system."""
    allowed = (
        "__future__",
        "dataclasses",
        "typing",
        "pydantic",
        "schedagent.models",
        "schedagent.errors",
        "schedagent.config",
    )
    tree = ast.parse((ROOT / "schedagent" / "opspec.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and all(m.split(".")[0] in allowed or m in allowed for m in imported), imported


def test_every_operation_this_process_runs_has_one_handler_and_one_declaration() -> None:
    runnable = {s.name for s in opspec.SPECS.values() if s.where != "daemon"}
    assert set(ops.OPS) == runnable
    assert all(op.spec is opspec.SPECS[name] for name, op in ops.OPS.items())
    assert ops.PRIVILEGED == {s.name for s in opspec.SPECS.values() if s.privileged}
    assert {"load_policy", "hold_policy", "benchmark", "tune", "rollback"} <= ops.PRIVILEGED


def test_a_local_operation_is_refused_to_a_socket_peer() -> None:
    token = ops.CALLER_UID.set(1000)
    try:
        with pytest.raises(ops.OpError, match="runs only in the caller's own process"):
            ops.call("verify_path", {"policy": "/etc/shadow"}, "socket uid=1000")
    finally:
        ops.CALLER_UID.reset(token)


def test_a_daemon_operation_is_not_run_in_process() -> None:
    with pytest.raises(ops.OpError, match="running daemon's operation"):
        ops.call("approve", {"id": 1}, "test")


def _runs(monkeypatch: pytest.MonkeyPatch) -> list[engine.RunRequest]:
    seen: list[engine.RunRequest] = []

    def fake_run(req: engine.RunRequest, on_attached: Any = None) -> engine.RunOutcome:
        seen.append(req)
        return engine.RunOutcome(
            req.spec,
            req.spec,
            req.overrides,
            req.target.describe() if req.target else None,
            1,
            reason="interrupted",
            final_state="disabled",
        )

    monkeypatch.setattr(services, "run_policy", fake_run)
    return seen


def test_hold_policy_keeps_a_verified_policy_on_every_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``tune --keep`` did only in the CLI: any front end can ask for it now."""
    seen = _runs(monkeypatch)
    asked: list[tuple[str, dict[str, int]]] = []

    def fake_verified(ref: str, overrides: dict[str, int]) -> VerifiedArtifact:
        asked.append((ref, overrides))
        return VerifiedArtifact(
            "0123456789abcdef0123", "vtime", "vtime", "h", "k", {"slice_ns": 3_000_000}, 0.0
        )

    monkeypatch.setattr(services, "verified_artifact", fake_verified)
    out = ops.call(
        "hold_policy", {"policy": "0123456789abcdef0123", "cgroup": "a/b", "duration_s": 30}, "test"
    )
    (req,) = seen
    assert asked == [("0123456789abcdef0123", {})]
    assert (req.spec, req.overrides, req.switch_all, req.duration_s) == (
        "vtime",
        {"slice_ns": 3_000_000},
        True,
        30,
    )
    assert req.target == Target(cgroup="a/b") and req.actor == "test"
    assert out["ok"] is True and out["reason"] == "interrupted"
    assert out["artifact_id"] == "0123456789abcdef0123"


@pytest.mark.parametrize("ref", ["vtime", "0123456789abcdef0123"])
def test_hold_policy_refuses_what_was_not_verified(
    monkeypatch: pytest.MonkeyPatch, ref: str
) -> None:
    seen = _runs(monkeypatch)
    with pytest.raises(GuardrailViolation, match="call verify_policy first"):
        ops.call("hold_policy", {"policy": ref}, "test")
    assert seen == []


def test_tune_takes_its_budgets_from_the_one_declaration(monkeypatch: pytest.MonkeyPatch) -> None:
    got: dict[str, Any] = {}

    class _Report:
        def to_json(self) -> dict[str, object]:
            return {"decision": None}

    def fake_tune(req: Any, slo: str | None, progress: Any, budget: Any) -> _Report:
        got.update(req=req, slo=slo, budget=budget)
        return _Report()

    monkeypatch.setattr(services, "tune", fake_tune)
    target = {"cgroup": "x"}
    ops.call(
        "tune",
        {**target, "budget_s": 60, "rounds": 6, "max_usd": 0.5, "slo": "p99_latency<=2ms"},
        "test",
    )
    req = got["req"]
    assert req.budget.budget_s == 60 and req.budget.rounds == 6 and req.agent == "offline"
    assert got["budget"].max_usd == 0.5 and got["slo"] == "p99_latency<=2ms"
    with pytest.raises(ops.OpError, match="budget_s: Input should be less than or equal to 86400"):
        ops.call("tune", {**target, "budget_s": 86_401}, "test")


def test_an_unknown_workload_lists_the_valid_ones() -> None:
    with pytest.raises(ops.OpError, match="valid choices: .*wakelat"):
        ops.call("benchmark", {"workload": "nope"}, "test")


def test_a_lost_audit_line_does_not_fail_an_operation_that_ran(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_a: Any) -> None:
        raise sqlite3.DatabaseError("file is not a database")

    monkeypatch.setattr(services, "audit", broken)
    monkeypatch.setattr(services, "unquarantine", lambda name: 2)
    assert ops.call("unquarantine", {"name": "vtime"}, "test") == {"policy": "vtime", "removed": 2}


def test_history_carries_the_proposals_the_cli_prints(tmp_path: Path) -> None:
    store = Store(tmp_path / "state" / "schedagent.db")
    try:
        store.add_proposal("web", "latency", {}, {"why": "x"})
    finally:
        store.close()
    out = ops.call("history", {"limit": 5}, "test")
    assert [p["policy"] for p in out["proposals"]] == ["latency"]
