"""A coding agent's view: a real MCP client session against `schedagent mcp` over stdio.

Usage: python3 scripts/mcp-demo.py PID   (root, on a sched_ext kernel)
It lists the tools, takes a snapshot, profiles PID, verifies a policy and loads the
verified artifact as a 3 s canary on PID's threads, then shows the audit trail.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters


def show(name: str, result: Any, keys: list[str] | None = None) -> Any:
    data = result.structured_content or {}
    if result.is_error:
        print(f"  {name}: tool error: {''.join(getattr(c, 'text', '') for c in result.content)}")
        return None
    shown = {k: data[k] for k in keys} if keys else data
    print(f"  {name}: {json.dumps(shown, default=str)[:400]}")
    return data


async def main(pid: int) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "schedagent", "mcp"])
    async with Client(params, read_timeout_seconds=600) as client:
        tools = await client.list_tools()
        print(f"  tools: {', '.join(t.name for t in tools.tools)}")
        show(
            "system_snapshot",
            await client.call_tool("system_snapshot", {}),
            ["sched_ext", "topology", "loadavg_1m"],
        )
        show(
            "profile_workload",
            await client.call_tool("profile_workload", {"pid": pid, "duration_s": 3}),
            ["class", "slo", "rationale"],
        )
        show(
            "load_policy (not verified)",
            await client.call_tool(
                "load_policy", {"policy": "latency", "pid": pid, "duration_s": 3}
            ),
        )
        ver = show(
            "verify_policy",
            await client.call_tool("verify_policy", {"name": "latency"}),
            ["artifact_id", "passed"],
        )
        if ver:
            show(
                "load_policy (verified artifact)",
                await client.call_tool(
                    "load_policy", {"policy": ver["artifact_id"], "pid": pid, "duration_s": 3}
                ),
                ["ops_while_attached", "mode", "sched_ext_after"],
            )
        hist = show("history", await client.call_tool("history", {"limit": 6}), [])
        for rec in (hist or {}).get("audit", []):
            print(f"    audit: {rec['actor']} {rec['action']} {json.dumps(rec['args'])[:100]}")


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]))
