"""Issue 8: the MCP server on a real sched_ext kernel, driven by the SDK's stdio client."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Self

import anyio
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from schedagent.kernel import scx
from tests.vm.conftest import FIXTURES, report

pytestmark = pytest.mark.vm

SPIN = "import time\nwhile True:\n    time.sleep(0.002)\n"


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


class _OpsWatch:
    """Polls root/ops and state while a call runs: what the kernel really had loaded."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str | None]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            snap = scx.read_state()
            self.seen.add((snap.state, snap.ops))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_verify_then_load_through_a_real_mcp_client(tmp_path: Path) -> None:
    """Repository policy and hand-written source: verified, loaded as canaries (the kernel
    shows them enabled), refused when unverified or rejected by the verifier."""
    target = subprocess.Popen([sys.executable, "-c", SPIN])
    seq = scx.read_state().enable_seq
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "schedagent", "mcp"],
        env={
            **os.environ,
            "SCHEDAGENT_STATE_DIR": str(tmp_path / "state"),
            "SCHEDAGENT_SOCKET": str(tmp_path / "no-daemon.sock"),
        },
    )
    out: dict[str, Any] = {}

    async def main() -> None:
        async with Client(params, read_timeout_seconds=600) as client:
            # unverified: refused before anything reaches the kernel
            early = await client.call_tool(
                "load_policy", {"policy": "vtime", "pid": target.pid, "duration_s": 2}
            )
            out["unverified"] = (early.is_error, _text(early))
            ver = await client.call_tool(
                "verify_policy", {"name": "vtime", "tunables": {"slice_ns": 3_000_000}}
            )
            assert not ver.is_error, _text(ver)
            art = ver.structured_content["artifact_id"]
            # same name, other tunables: not what was verified
            other = await client.call_tool(
                "load_policy", {"policy": "vtime", "pid": target.pid, "duration_s": 2}
            )
            out["other_tunables"] = (other.is_error, _text(other))
            with _OpsWatch() as watch:
                loaded = await client.call_tool(
                    "load_policy", {"policy": art, "pid": target.pid, "duration_s": 3}
                )
            out["vtime"] = (loaded.is_error, _text(loaded), loaded.structured_content, watch.seen)
            src = (FIXTURES / "minimal.bpf.c").read_text()
            ver2 = await client.call_tool("verify_policy", {"source": src})
            assert not ver2.is_error, _text(ver2)
            with _OpsWatch() as watch:
                own = await client.call_tool(
                    "load_policy",
                    {
                        "policy": ver2.structured_content["artifact_id"],
                        "pid": target.pid,
                        "duration_s": 2,
                    },
                )
            out["minimal"] = (own.is_error, _text(own), watch.seen)
            rejected = await client.call_tool(
                "verify_policy", {"source": (FIXTURES / "verifier_reject.bpf.c").read_text()}
            )
            out["rejected"] = (rejected.is_error, _text(rejected))
            hist = await client.call_tool("history", {"limit": 20})
            out["audit"] = [r["action"] for r in hist.structured_content["audit"]]

    try:
        anyio.run(main)
    finally:
        target.kill()
        target.wait()
    report("mcp_load", {k: str(v)[:300] for k, v in out.items()})
    assert out["unverified"][0] and "call verify_policy first" in out["unverified"][1]
    assert out["other_tunables"][0] and "has not passed verification" in out["other_tunables"][1]
    is_error, text, result, seen = out["vtime"]
    assert not is_error, text
    assert ("enabled", "vtime") in seen  # the kernel had it loaded during the call
    assert result["ops_while_attached"] == "vtime" and result["mode"] == "partial (canary)"
    assert result["outcome"]["reason"] == "duration"
    assert result["outcome"]["switched_threads"] >= 1
    assert result["sched_ext_after"]["state"] == "disabled"
    is_error, text, seen = out["minimal"]
    assert not is_error, text
    assert ("enabled", "minimal") in seen
    assert out["rejected"][0] and "verifier" in out["rejected"][1].lower()
    assert out["audit"].count("verify_policy") >= 2 and out["audit"].count("load_policy") == 2
    snap = scx.read_state()
    assert snap.state == "disabled" and snap.enable_seq == seq + 2
