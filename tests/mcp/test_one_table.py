"""Issue 15: the MCP tools, the LLM's tools and the socket are adapters over one table.

Every schema a model sees is generated from the operation's pydantic model, and what
one front end did alone (writing bench records) is an operation every front end reaches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from mcp_server.server import build
from schedagent import opspec
from schedagent.agent import llm, tools
from schedagent.bench import service as bench_service
from schedagent.bench.runner import ArmResult, BenchResult


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SCHEDAGENT_SOCKET", str(tmp_path / "no-daemon.sock"))


def _mcp_schemas() -> dict[str, dict[str, Any]]:
    async def main() -> dict[str, dict[str, Any]]:
        async with Client(build()) as client:
            return {t.name: t.input_schema for t in (await client.list_tools()).tools}

    return anyio.run(main)


def test_every_llm_tool_schema_is_its_models_generated_schema() -> None:
    by_name = {t.name: t for t in tools.TOOLS}
    assert [t["name"] for t in llm.TOOL_SPECS] == list(by_name)
    for sent in llm.TOOL_SPECS:
        assert set(sent) == {"name", "description", "input_schema"}  # the Messages API's
        assert sent["input_schema"] == by_name[sent["name"]].args.model_json_schema()
        assert sent["input_schema"]["type"] == "object" and sent["description"]


def test_an_operation_the_llm_calls_has_the_operations_model() -> None:
    as_ops = [t for t in tools.TOOLS if t.op is not None]
    assert {t.name for t in as_ops} == {"list_policies", "show_policy"}
    for tool in as_ops:
        assert tool.op is not None and tool.args is opspec.SPECS[tool.op].args


def test_mcp_and_llm_schemas_of_one_operation_come_from_one_model() -> None:
    mcp = _mcp_schemas()
    assert set(mcp) == {s.name for s in opspec.shared()}
    for name, schema in mcp.items():  # every MCP tool: its operation's model, field for field
        model = opspec.input_schema(name)
        assert schema["properties"] == model["properties"], name
        assert schema.get("required", []) == model.get("required", []), name
    for sent in llm.TOOL_SPECS:
        if sent["name"] in mcp:
            assert sent["input_schema"]["properties"] == mcp[sent["name"]]["properties"]
            assert sent["input_schema"].get("required") == mcp[sent["name"]].get("required")


def _bench_result(workload: str) -> BenchResult:
    res = BenchResult(
        workload, "latency-critical", "p99_request_latency", "eevdf", 0.95, 4, True, 0
    )
    res.arms.append(ArmResult("vtime", "default", 4, 0, "better", "faster"))
    return res


def test_a_benchmark_is_recorded_whichever_front_end_runs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The MCP resource filtered for `bench` events that nothing recorded: only the CLI
    wrote bench files. The operation records them now, so MCP sees its own runs."""
    asked: list[tuple[str, list[Any]]] = []

    def fake_compare(workload: str, arms: list[Any], runs: int = 5, **kw: Any) -> BenchResult:
        asked.append((workload, arms))
        return _bench_result(workload)

    monkeypatch.setattr(bench_service, "bench_compare", fake_compare)

    async def main() -> dict[str, Any]:
        async with Client(build()) as client:
            ran = await client.call_tool(
                "benchmark", {"workload": "wakelat", "policies": ["vtime"], "runs": 4}
            )
            assert not ran.is_error, ran.content
            last = await client.read_resource("schedagent://reports/last")
            text = getattr(last.contents[0], "text", "")
            return {"ran": ran.structured_content, "last": json.loads(text)}

    got = anyio.run(main)
    ran = got["ran"]
    assert [a.policy for a in asked[0][1]] == ["vtime"]
    assert json.loads(Path(ran["record"]).read_text())[0]["workload"] == "wakelat"
    assert "| wakelat | default | vtime |" in Path(ran["markdown"]).read_text()
    assert Path(ran["plots"]["wakelat"]).read_bytes()[:4] == b"\x89PNG"
    (bench,) = [r for r in got["last"]["reports"] if r["kind"] == "bench"]
    assert bench["detail"]["record"] == ran["record"]
    assert bench["detail"]["verdicts"][0]["verdict"] == "better"
