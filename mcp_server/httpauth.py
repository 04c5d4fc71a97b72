"""Bearer-token authentication for the MCP server's HTTP transport.

Over stdio the client is the process that started the server. Over HTTP anyone who
can reach the port is a client, and the server may run as root: so every HTTP
request must carry ``Authorization: Bearer <token>``. The token is generated once,
kept in a 0600 file under the state directory, and only the file's path is ever
printed. The check is plain ASGI middleware around the SDK's app, so it covers
every route the SDK serves, whatever it adds in later versions.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from schedagent.config import state_dir
from schedagent.errors import ConfigError, GuardrailViolation

log = logging.getLogger(__name__)

#: ASGI types (the SDK's Starlette app speaks these; kept loose on purpose).
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_BYTES = 32


def default_token_path() -> Path:
    """Where the HTTP bearer token lives: ``<state dir>/mcp-http.token``."""
    return state_dir() / "mcp-http.token"


def load_or_create_token(path: Path) -> str:
    """The token in ``path``, created (0600, never through a symlink) if it is absent.

    An existing file must be a regular file owned by this user and not readable by
    anyone else; otherwise it is refused rather than trusted or overwritten.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
        log.warning("created the MCP HTTP token in %s (mode 0600)", path)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise ConfigError(
            f"cannot open the MCP HTTP token file {path} ({err.strerror}); "
            "it must be a regular file, not a symlink. Remove it and start "
            "again to generate a new token"
        ) from err
    with os.fdopen(fd) as src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise GuardrailViolation(
                f"the MCP HTTP token file {path} has mode {oct(info.st_mode & 0o777)} and "
                f"owner uid {info.st_uid}; expected a regular file of uid {os.geteuid()} with "
                f"mode 0600. Run `chmod 600 {path}` (and chown it), or remove it to generate "
                "a new token"
            )
        token = src.read(4096).strip()
    if len(token) < 32:
        raise GuardrailViolation(
            f"the MCP HTTP token in {path} is shorter than 32 characters; "
            "remove the file to generate a new one"
        )
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_http_serving(host: str, token: str | None, euid: int) -> list[str]:
    """Refuse an unauthenticated HTTP server as root; return warnings to print loudly."""
    if token is None and euid == 0:
        raise GuardrailViolation(
            "refusing to serve MCP over HTTP as root without authentication: any local "
            "user could load schedulers and roll back. Drop --no-auth (a bearer token is "
            "generated and its file path printed), or use --transport stdio"
        )
    warnings = []
    if not is_loopback(host):
        warnings.append(
            f"WARNING: the MCP server listens on {host}, not loopback: every "
            "machine that can reach this port can try to call schedagent's "
            "tools. Bind 127.0.0.1 unless you really mean it."
        )
    if token is None:
        warnings.append(
            "WARNING: MCP over HTTP WITHOUT authentication: every local user can "
            "call the tools as uid " + str(euid) + "."
        )
    return warnings


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: App, token: str) -> None:
        self.app, self._token = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") in ("http", "websocket") and not self._allowed(scope):
            await _unauthorized(scope, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers") or []:
            if name.lower() == b"authorization":
                given = bytes(value)
                break
        scheme, _, presented = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), self._token)


async def _unauthorized(scope: Scope, send: Send) -> None:
    if scope.get("type") == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps(
        {
            "error": "unauthorized",
            "error_description": (
                "send Authorization: Bearer <token>; the token is in the file the server printed "
                "at start (default: <state dir>/mcp-http.token)"
            ),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="schedagent"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
