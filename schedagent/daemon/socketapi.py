"""The daemon's Unix-socket API: one JSON request per line, one JSON reply per line.

Only root and members of the configured group may talk to it. The socket file is
mode 0660 (group-owned), and every connection is checked again with SO_PEERCRED, so
a loosened file mode still refuses strangers. A stranger is answered before anything
else happens (no priority change, no read). Every client has ``REQUEST_TIMEOUT_S`` to
send its request line, and at most ``MAX_CONNECTIONS`` are served at once; the rest are
refused at accept, so idle connections cannot pin threads.

Request: ``{"op": "status", "args": {}}``.
Reply: ``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "...", "kind": "..."}``.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schedagent import ops
from schedagent.errors import ConfigError, GuardrailViolation, SchedagentError
from schedagent.execution import host

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
    """The peer's primary group and its supplementary groups (read on the execution side)."""
    return {gid} | host.peer_groups(pid)


def group_id(name: str) -> int | None:
    """The gid of group ``name``, or None when no such group exists."""
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
    return (
        f"refused: uid {uid} is neither root nor in group {group!r}. Ask an administrator "
        f"to add you (usermod -aG {group} USER) or use sudo"
    )


#: A client has this long to send its whole request line (a slow or idle client is dropped).
REQUEST_TIMEOUT_S = 10.0
#: Connections served at once; the next one is refused at accept, not queued on a thread.
MAX_CONNECTIONS = 32
#: A reply that the client does not read within this long is abandoned.
REPLY_TIMEOUT_S = 30.0


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        # the cap is taken at accept, before a thread exists: 200 idle peers cost 200
        # file descriptors for at most REQUEST_TIMEOUT_S, not 200 threads forever
        if not self.slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _refuse_busy(sock: socket.socket) -> None:
    message = {
        "ok": False,
        "kind": "DaemonBusy",
        "error": f"the daemon already serves {MAX_CONNECTIONS} connections; retry in a "
        "few seconds (an idle client is dropped after "
        f"{REQUEST_TIMEOUT_S:.0f} s)",
    }
    with contextlib.suppress(OSError):
        sock.settimeout(0.5)
        sock.sendall(json.dumps(message).encode() + b"\n")


def read_request(sock: socket.socket, limit: int, timeout_s: float) -> bytes | None:
    """One request line of at most ``limit`` bytes (``limit + 1`` means too long), or None
    when the peer did not send a whole line within ``timeout_s`` in total.

    The deadline covers the whole line, so a client trickling one byte at a time is
    dropped as surely as one that sends nothing.
    """
    deadline = time.monotonic() + timeout_s
    data = bytearray()
    while b"\n" not in data and len(data) <= limit:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, limit + 1 - len(data)))
        except (TimeoutError, OSError):
            return None
        if not chunk:
            break
        data += chunk
    end = data.find(b"\n")
    return bytes(data[: end + 1] if end >= 0 else data[: limit + 1])


class ApiServer:
    """Serve ``handler(op, args, actor)`` on a Unix socket in background threads."""

    def __init__(
        self,
        path: Path,
        group: str,
        handler: Handler,
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.path, self.group, self.handler = path, group, handler
        self.max_connections, self.request_timeout_s = max_connections, request_timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Create the socket (0660 to the group, 0600 without it) and serve in a thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        api = self

        class _Conn(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                api._serve_one(self.request)

        old = os.umask(0o117)
        try:
            self._server = _Server(str(self.path), _Conn)
        finally:
            os.umask(old)
        self._server.slots = threading.BoundedSemaphore(self.max_connections)
        gid = group_id(self.group)
        if gid is not None:
            os.chown(self.path, 0, gid)
        os.chmod(self.path, 0o660 if gid is not None else 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve_one(self, sock: socket.socket) -> None:
        pid, uid, gid = peer_credentials(sock)
        refusal = authorize(pid, uid, gid, self.group)
        if refusal is not None:  # a stranger gets this line and nothing else: no priority
            log.warning("socket: %s (pid %d)", refusal, pid)
            _reply(sock, {"ok": False, "error": refusal, "kind": "PermissionDenied"})
            return
        line = read_request(sock, MAX_REQUEST, self.request_timeout_s)
        if line is None:
            log.info(
                "socket: dropped pid %d: no request line within %.0f s", pid, self.request_timeout_s
            )
            _reply(
                sock,
                {
                    "ok": False,
                    "kind": "ConfigError",
                    "error": f"no request line within {self.request_timeout_s:.0f} s; "
                    "send one JSON object and a newline",
                },
            )
            return
        if len(line) > MAX_REQUEST:
            _reply(
                sock,
                {
                    "ok": False,
                    "kind": "GuardrailViolation",
                    "error": f"request larger than {MAX_REQUEST} bytes refused",
                },
            )
            return
        req, problem = _parse(line)
        if problem is not None:
            _reply(
                sock, {"ok": False, "kind": "ConfigError", "error": f"malformed request: {problem}"}
            )
            return
        # only now, for an authorised and complete request: verify, attach and measure
        # must stay on time beside the very CPU hogs a policy is being tried against
        host.raise_priority()
        caller = ops.CALLER_UID.set(uid)
        watch = HangUpWatch(sock)
        hung_up = ops.HUNG_UP.set(watch.hung_up.is_set)
        try:
            result = self.handler(req["op"], req.get("args", {}), f"socket uid={uid} pid={pid}")
            _reply(sock, {"ok": True, "result": result})
        except SchedagentError as err:
            _reply(sock, {"ok": False, "error": str(err), "kind": type(err).__name__})
        except Exception:
            # the text of an unexpected error may hold what it was reading: log it here,
            # send the client only the operation's name
            log.exception("socket: %s failed", req["op"])
            _reply(
                sock,
                {
                    "ok": False,
                    "kind": "InternalError",
                    "error": f"{req['op']} failed inside the daemon with an unexpected "
                    "error; the daemon's log (journalctl -u schedagent) has "
                    "the details",
                },
            )
        finally:
            watch.stop()
            ops.HUNG_UP.reset(hung_up)
            ops.CALLER_UID.reset(caller)


class HangUpWatch:
    """Notices when a client closes its end while its request runs.

    A client sends one line and then only waits, so anything readable on the socket
    afterwards is its end closing (EOF): ``hung_up`` is set, and a long operation stops
    at its next progress step (``ops.HUNG_UP``)."""

    def __init__(self, sock: socket.socket, poll_s: float = 0.5) -> None:
        self.hung_up = threading.Event()
        self._done = threading.Event()
        self._sock, self._poll_s = sock, poll_s
        self._thread = threading.Thread(target=self._run, name="hang-up watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        while not self._done.is_set():
            if not poller.poll(self._poll_s * 1000):
                continue
            try:
                data = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                log.info("socket: the client hung up; its operation stops at its next step")
                self.hung_up.set()
                return
            self._done.wait(self._poll_s)  # a client that keeps talking: ignore, poll slower

    def stop(self) -> None:
        """The request is answered: stop watching."""
        self._done.set()
        self._thread.join(timeout=2 * self._poll_s)


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


def _reply(sock: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sock.settimeout(REPLY_TIMEOUT_S)
        sock.sendall(json.dumps(message, default=str).encode() + b"\n")


class ApiClient:
    """Talk to a running daemon."""

    def __init__(self, path: Path, timeout_s: float = 3600.0) -> None:
        self.path, self.timeout_s = path, timeout_s

    def available(self) -> bool:
        """Whether the socket file exists (a daemon may still not answer on it)."""
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
                "(usermod -aG schedagent USER, or sudo)"
            ) from err
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise DaemonUnavailable(
                f"no daemon answers on {self.path}; start it with "
                "`systemctl start schedagent` or `schedagent daemon`"
            ) from err
        try:
            reply = json.loads(data)
        except ValueError as err:
            raise DaemonUnavailable(
                f"the daemon on {self.path} closed the connection without a reply; see its log"
            ) from err
        if reply.get("ok"):
            return dict(reply["result"])
        kind, message = reply.get("kind", "Error"), reply.get("error", "unknown error")
        if kind == "PermissionDenied":
            raise GuardrailViolation(message)
        if kind == "ConfigError" or kind == "OpError":
            raise ConfigError(message)
        raise SchedagentError(f"{kind}: {message}")
