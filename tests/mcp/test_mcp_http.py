"""Issue 12: MCP over HTTP needs a bearer token, and MCP errors never leak what was read.

The HTTP checks drive the real server's ASGI app (``http_app``) with raw ASGI calls, so
no port is opened; the leak checks use the in-memory client against the real server.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from mcp_server import httpauth
from mcp_server.server import build, http_app
from schedagent.errors import ConfigError, GuardrailViolation
from schedagent.kernel import cgroupfs

SECRET = "root:$6$SECRET-HASH-issue12$:19000:0:99999:7:::"


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SCHEDAGENT_SOCKET", str(tmp_path / "no-daemon.sock"))


def _request(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """One POST /mcp through the ASGI app; (status, body)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8765),
    }
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return int(start["status"]), b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body"
    )


def test_the_token_file_is_generated_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "tok"
    token = httpauth.load_or_create_token(path)
    assert len(token) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert httpauth.load_or_create_token(path) == token


def test_a_world_readable_or_symlinked_token_file_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.write_text("x" * 40 + "\n")
    loose.chmod(0o644)
    with pytest.raises(GuardrailViolation, match="expected a regular file .* mode 0600"):
        httpauth.load_or_create_token(loose)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not a symlink"):
        httpauth.load_or_create_token(link)
    assert not (tmp_path / "elsewhere").exists()  # nothing was created through the link


def test_http_as_root_without_authentication_is_refused() -> None:
    with pytest.raises(GuardrailViolation, match="refusing to serve MCP over HTTP as root"):
        httpauth.check_http_serving("127.0.0.1", None, 0)
    assert httpauth.check_http_serving("127.0.0.1", "t" * 40, 0) == []


def test_a_non_loopback_address_is_warned_about_loudly() -> None:
    (warning,) = httpauth.check_http_serving("0.0.0.0", "t" * 40, 0)
    assert warning.startswith("WARNING") and "0.0.0.0" in warning
    assert httpauth.check_http_serving("::1", "t" * 40, 1000) == []


def test_the_cli_refuses_http_without_a_token_as_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the refusal is for root; this test runs unprivileged")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "schedagent",
            "mcp",
            "--transport",
            "http",
            "--no-auth",
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 30 and "refusing to serve MCP over HTTP as root" in out.stderr


@pytest.mark.parametrize(
    "header",
    [None, b"Bearer wrong-token-wrong-token-wrong-token", b"Basic dXNlcjpwYXNz", b"Bearer "],
)
def test_the_real_http_app_rejects_a_missing_or_wrong_token(header: bytes | None) -> None:
    app = http_app(build(), "127.0.0.1", "right-token-" * 4)
    headers = [(b"content-type", b"application/json")]
    if header is not None:
        headers.append((b"authorization", header))
    status, body = _request(app, headers)
    assert status == 401 and b"Authorization: Bearer" in body


def test_the_right_token_reaches_the_app() -> None:
    reached: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = httpauth.BearerAuth(inner, "right-token-" * 4)
    assert _request(app, [(b"authorization", b"Bearer " + b"right-token-" * 4)]) == (200, b"ok")
    assert _request(app, [(b"authorization", b"Bearer " + b"right-token-" * 3)])[0] == 401
    assert reached == ["/mcp"]


def test_the_cgroup_traversal_over_mcp_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "shadow"
    secret.write_text(SECRET + "\n")
    root = tmp_path / "cg"
    (root / "x").mkdir(parents=True)
    (root / "x" / "cgroup.procs").symlink_to(secret)
    monkeypatch.setattr(cgroupfs, "CGROUP_ROOT", root)

    async def main() -> None:
        async with Client(build()) as client:
            for path in ("x", "../../../tmp/x"):
                result = await client.call_tool(
                    "profile_workload", {"cgroup": path, "duration_s": 0.5}
                )
                text = "".join(getattr(c, "text", "") for c in result.content)
                assert result.is_error and "refused" in text and "SECRET" not in text, text

    anyio.run(main)


def test_an_unexpected_error_reaches_the_model_without_its_text() -> None:
    class Leaky:
        def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
            raise ValueError(f"invalid literal for int() with base 10: {SECRET!r}")

    async def main() -> None:
        async with Client(build(Leaky())) as client:
            result = await client.call_tool("status", {})
            text = "".join(getattr(c, "text", "") for c in result.content)
            assert result.is_error and "SECRET" not in text and "internal error" in text

    anyio.run(main)
