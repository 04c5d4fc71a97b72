"""Issue 8: the MCP server through real MCP clients (in memory, and over stdio).

These run on the host, which has no sched_ext: every tool that only reads works,
and every path that would load something must refuse with a clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from mcp_server.server import build
from schedagent import ops
from schedagent.policy import repo

TOOLS = {
    "system_snapshot",
    "profile_workload",
    "runqueue_latency",
    "list_policies",
    "show_policy",
    "verify_policy",
    "load_policy",
    "prebuild",
    "unquarantine",
    "list_workloads",
    "benchmark",
    "bench_suite",
    "list_interventions",
    "load_knob",
    "tune",
    "status",
    "rollback",
    "history",
}


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SCHEDAGENT_SOCKET", str(tmp_path / "no-daemon.sock"))


#: stands for the pid of the ``sleeper`` fixture in parametrized arguments
SLEEPER = -1


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A user process a canary may name (pid 1 and the server itself are refused)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _in_memory(body: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Client(build()) as client:
            await body(client)

    anyio.run(main)


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def test_every_tool_is_listed_with_a_typed_schema() -> None:
    async def body(client: Client) -> None:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) == TOOLS
        load = listed["load_policy"].input_schema
        assert load["required"] == ["policy"]
        assert load["properties"]["duration_s"]["maximum"] == 600
        assert all(t.description for t in listed.values())

    _in_memory(body)


def test_read_only_tools_answer_on_a_host_without_sched_ext() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    async def body(client: Client) -> None:
        snap = await client.call_tool("system_snapshot", {})
        assert not snap.is_error and snap.structured_content is not None
        assert snap.structured_content["sched_ext"]["state"] in ("disabled", "absent", "enabled")
        assert snap.structured_content["topology"]["cpus"] == os.cpu_count()
        pols = await client.call_tool("list_policies", {})
        names = [p["name"] for p in pols.structured_content["policies"]]
        assert names == repo.builtin_names()
        shown = await client.call_tool("show_policy", {"name": "target"})
        assert (
            'SEC("struct_ops' in shown.structured_content["source_text"]
            or "struct_ops" in shown.structured_content["source_text"]
        )
        prof = await client.call_tool("profile_workload", {"pid": sleeper.pid, "duration_s": 0.5})
        assert not prof.is_error, _text(prof)
        assert prof.structured_content["class"] == "interactive"  # a sleeping process

    try:
        _in_memory(body)
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(
    ("tool", "args", "expect"),
    [
        ("show_policy", {"name": "nope"}, "valid choices: batch, fifo"),
        ("profile_workload", {"pid": 0}, "greater than or equal to 1"),
        ("profile_workload", {"pid": 1, "cgroup": "x"}, "exactly one of pid or cgroup"),
        ("profile_workload", {"pid": 4_099_999, "duration_s": 0.5}, "does not exist"),
        ("profile_workload", {"pid": 1, "duration_s": 1e9}, "less than or equal to 600"),
        ("verify_policy", {}, "exactly one of name"),
        ("verify_policy", {"name": "vtime", "tunables": {"slice_ns": "big"}}, "valid integer"),
        ("load_policy", {"policy": "vtime", "pid": SLEEPER}, "has not passed verification"),
        (
            "load_policy",
            {"policy": "0123456789abcdef0123", "pid": SLEEPER},
            "call verify_policy first",
        ),
        ("load_policy", {"pid": SLEEPER}, "policy"),
        ("benchmark", {"workload": "nope", "policy": "vtime"}, "valid choices: jobset"),
        ("load_knob", {"knob": "nice:-99", "pid": SLEEPER}, "nice must be in [-20, 19]"),
        ("load_knob", {"knob": "renice", "pid": SLEEPER}, "expected one of nice:N"),
        ("load_knob", {"knob": "nice:-5", "pid": 1}, "other than init (pid 1)"),
        ("load_knob", {"knob": "nice:-5", "pid": 4_099_999}, "does not exist"),
        ("load_knob", {"knob": "nice:-5", "cgroup": "../etc"}, "no empty, '.' or '..'"),
        ("load_knob", {"knob": "fifo:1", "pid": SLEEPER, "duration_s": 601}, "less than or equal"),
        ("load_knob", {"knob": "nice:-5"}, "exactly one of pid or cgroup"),
        ("tune", {"pid": SLEEPER, "others": [1]}, "greater than or equal to 2"),
        ("tune", {"pid": SLEEPER, "others": [4_099_999]}, "does not exist"),
        ("history", {"limit": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_arguments_are_tool_errors_that_say_what_to_do(
    tool: str, args: dict[str, Any], expect: str, sleeper: int
) -> None:
    args = {k: sleeper if v == SLEEPER else v for k, v in args.items()}

    async def body(client: Client) -> None:
        result = await client.call_tool(tool, args)
        assert result.is_error, _text(result)
        assert expect in _text(result), _text(result)

    _in_memory(body)


def test_unverified_source_is_refused_and_oversized_source_is_rejected(sleeper: int) -> None:
    async def body(client: Client) -> None:
        # loading a source's artifact id without verify_policy: refused by hash
        staged = await client.call_tool("load_policy", {"policy": "f" * 20, "pid": sleeper})
        assert staged.is_error and "verify_policy" in _text(staged)
        huge = await client.call_tool("verify_policy", {"source": "x" * (65 * 1024)})
        assert huge.is_error and "limit is 65536" in _text(huge)

    _in_memory(body)


def test_interventions_are_listed_and_a_knob_is_held_then_put_back(sleeper: int) -> None:
    """A real MCP client lists the interventions, then holds nice:-4 on a real process
    for a second: the kernel shows it while held, and the old nice after."""
    import threading

    from schedagent.kernel import knobs

    seen: list[int] = []

    def watch() -> None:
        for _ in range(40):
            seen.append(knobs.read_attr(sleeper).nice)
            time.sleep(0.05)

    async def body(client: Client) -> None:
        listed = await client.call_tool("list_interventions", {})
        assert not listed.is_error, _text(listed)
        rows = listed.structured_content["interventions"]
        assert [r["kind"] for r in rows][:2] == ["nice", "slice"] and rows[-1]["kind"] == "policy"
        assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
        watcher = threading.Thread(target=watch)
        watcher.start()
        held = await client.call_tool(
            "load_knob", {"knob": "nice:-4", "pid": sleeper, "duration_s": 1}
        )
        watcher.join()
        assert not held.is_error, _text(held)
        out = held.structured_content
        assert (out["knob"], out["threads"], out["restored"], out["problem"]) == (
            "nice:-4",
            1,
            1,
            None,
        )

    before = knobs.read_attr(sleeper)
    _in_memory(body)
    assert -4 in seen  # the kernel had it while it was held
    assert knobs.read_attr(sleeper) == before  # and has the old state back


def test_results_are_bounded() -> None:
    out = ops.bounded({"log": "x" * (ops.MAX_TEXT + 50), "items": list(range(ops.MAX_ITEMS + 5))})
    assert len(out["log"]) < ops.MAX_TEXT + 100 and out["log"].endswith("characters cut")
    assert len(out["items"]) == ops.MAX_ITEMS + 1 and out["items"][-1] == "... 5 more items cut"


def test_resources_expose_the_repository_and_reports() -> None:
    async def body(client: Client) -> None:
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"schedagent://policies", "schedagent://reports/last"} <= uris
        one = await client.read_resource("schedagent://policies/latency")
        assert json.loads(one.contents[0].text)["name"] == "latency"

    _in_memory(body)


def test_stdio_server_speaks_mcp_to_the_sdk_client(tmp_path: Path, sleeper: int) -> None:
    """`schedagent mcp` as a subprocess, driven by the SDK's stdio client."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "schedagent", "mcp", "--transport", "stdio"],
        env={
            **os.environ,
            "SCHEDAGENT_STATE_DIR": str(tmp_path / "state"),
            "SCHEDAGENT_SOCKET": str(tmp_path / "no-daemon.sock"),
        },
    )

    async def main() -> None:
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == TOOLS
            status = await client.call_tool("status", {})
            assert not status.is_error and "sched_ext" in status.structured_content
            bad = await client.call_tool(
                "load_policy", {"policy": "fifo", "pid": sleeper, "duration_s": 5}
            )
            assert bad.is_error and "has not passed verification" in _text(bad)
            hist = await client.call_tool("history", {"limit": 5})
            assert not hist.is_error

    anyio.run(main)


def test_bad_transport_is_a_clear_cli_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "schedagent", "mcp", "--transport", "pigeon"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode != 0 and "valid choices are stdio and http" in out.stderr
