"""The daemon's Unix-socket API: one JSON request per line, one JSON reply per line.

Only root and members of the configured group may talk to it. The socket file is
mode 0660 (group-owned), and every connection is checked again with SO_PEERCRED, so
a loosened file mode still refuses strangers.

Request: ``{"op": "status", "args": {}}``.
Reply: ``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "...", "kind": "..."}``.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schedagent.errors import ConfigError, GuardrailViolation, SchedagentError
from schedagent.kernel import procstat

log = logging.getLogger(__name__)

#: The longest request line accepted (a policy source fits; anything larger is refused).
MAX_REQUEST = 512 * 1024

Handler = Callable[[str, dict[str, Any], str], dict[str, Any]]


class DaemonUnavailable(SchedagentError):
    """No daemon answers on the socket."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def _groups_of(pid: int, gid: int) -> set[int]:
    groups = {gid}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                groups |= {int(g) for g in line.split()[1:]}
    return groups


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def authorize(pid: int, uid: int, gid: int, group: str) -> str | None:
    """None when the peer may use the API, else why not."""
    if uid == 0:
        return None
    allowed = group_id(group)
    if allowed is not None and allowed in _groups_of(pid, gid):
        return None
    return (f"refused: uid {uid} is neither root nor in group {group!r}. Ask an administrator "
            f"to add you (usermod -aG {group} USER) or use sudo")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class ApiServer:
    """Serve ``handler(op, args, actor)`` on a Unix socket in background threads."""

    def __init__(self, path: Path, group: str, handler: Handler) -> None:
        self.path, self.group, self.handler = path, group, handler
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        api = self

        class _Conn(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                api._serve_one(self.request, self.rfile, self.wfile)

        old = os.umask(0o117)
        try:
            self._server = _Server(str(self.path), _Conn)
        finally:
            os.umask(old)
        gid = group_id(self.group)
        if gid is not None:
            os.chown(self.path, 0, gid)
        os.chmod(self.path, 0o660 if gid is not None else 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="api",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve_one(self, sock: socket.socket, rfile: Any, wfile: Any) -> None:
        # requests verify, attach and measure: they must stay on time beside the very
        # CPU hogs a policy is being tried against (only root and the group get here)
        procstat.raise_priority()
        pid, uid, gid = peer_credentials(sock)
        refusal = authorize(pid, uid, gid, self.group)
        if refusal is not None:
            log.warning("socket: %s (pid %d)", refusal, pid)
            _reply(wfile, {"ok": False, "error": refusal, "kind": "PermissionDenied"})
            return
        line = rfile.readline(MAX_REQUEST + 1)
        if len(line) > MAX_REQUEST:
            _reply(wfile, {"ok": False, "kind": "GuardrailViolation",
                           "error": f"request larger than {MAX_REQUEST} bytes refused"})
            return
        req, problem = _parse(line)
        if problem is not None:
            _reply(wfile, {"ok": False, "kind": "ConfigError",
                           "error": f"malformed request: {problem}"})
            return
        args = req.get("args", {})
        try:
            result = self.handler(req["op"], args, f"socket uid={uid} pid={pid}")
            _reply(wfile, {"ok": True, "result": result})
        except SchedagentError as err:
            _reply(wfile, {"ok": False, "error": str(err), "kind": type(err).__name__})
        except Exception as err:
            log.exception("socket: %s failed", req["op"])
            _reply(wfile, {"ok": False, "kind": "InternalError",
                           "error": f"{req['op']} failed inside the daemon: {err!r}; see its log"})


def _parse(line: bytes) -> tuple[dict[str, Any], str | None]:
    """The request, or why it is not one."""
    try:
        req = json.loads(line)
    except ValueError as err:
        return {}, f"not JSON ({err})"
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        return {}, "a request is a JSON object with a string `op`"
    if not isinstance(req.get("args", {}), dict):
        return {}, "`args` must be a JSON object"
    return req, None


def _reply(wfile: Any, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        wfile.write(json.dumps(message, default=str).encode() + b"\n")
        wfile.flush()


class ApiClient:
    """Talk to a running daemon."""

    def __init__(self, path: Path, timeout_s: float = 3600.0) -> None:
        self.path, self.timeout_s = path, timeout_s

    def available(self) -> bool:
        return self.path.exists()

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """One request; the daemon's errors come back as the matching exception class."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(str(self.path))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    # a refused peer is answered at accept, maybe before it has sent
                    sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except PermissionError as err:
            raise GuardrailViolation(
                f"refused by {self.path}: only root and the daemon's group may use it "
                "(usermod -aG schedagent USER, or sudo)") from err
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise DaemonUnavailable(f"no daemon answers on {self.path}; start it with "
                                    "`systemctl start schedagent` or `schedagent daemon`") from err
        try:
            reply = json.loads(data)
        except ValueError as err:
            raise DaemonUnavailable(f"the daemon on {self.path} closed the connection without "
                                    "a reply; see its log") from err
        if reply.get("ok"):
            return dict(reply["result"])
        kind, message = reply.get("kind", "Error"), reply.get("error", "unknown error")
        if kind == "PermissionDenied":
            raise GuardrailViolation(message)
        if kind == "ConfigError" or kind == "OpError":
            raise ConfigError(message)
        raise SchedagentError(f"{kind}: {message}")
