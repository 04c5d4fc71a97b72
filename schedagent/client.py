"""One client for every front end: it decides which process runs an operation.

The rule is the same for every operation and every front end (the CLI, the MCP
server), and it reads ``where`` from ``schedagent.opspec``:

- ``shared``: the running daemon when its socket answers, else this process. A daemon
  that holds policies must also be the one that loads, rolls back and reports them, so
  ``status``, ``rollback`` and every privileged operation go to it when it runs.
- ``local``: always this process, with the caller's own rights.
- ``daemon``: only the daemon; without one, a clear error.

"Answers" means the request reached it: a missing socket or a refused connection falls
back to this process (nothing ran); a reply that never came does not (something may
have run). A socket that refuses this user falls back only for operations that change
nothing; a privileged one gets the daemon's refusal, which says how to get access.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from schedagent import ops, opspec
from schedagent.daemon.config import DEFAULT_SOCKET
from schedagent.daemon.socketapi import ApiClient, DaemonUnavailable
from schedagent.errors import GuardrailViolation


def socket_path() -> Path:
    """The daemon's socket: $SCHEDAGENT_SOCKET, else the default."""
    return Path(os.environ.get("SCHEDAGENT_SOCKET") or DEFAULT_SOCKET)


class Daemon(Protocol):
    """The daemon's side of the socket (``ApiClient``, or a fake in tests)."""

    def available(self) -> bool: ...

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]: ...


#: a connection to the socket at a path, waiting this long for a reply
Connect = Callable[[Path, float], Daemon]


def _never_reached(err: DaemonUnavailable) -> bool:
    """Whether the request never got to a daemon (so running it here runs it once)."""
    return isinstance(err.__cause__, (FileNotFoundError, ConnectionRefusedError))


class Client:
    """Run operations where ``opspec`` says they belong; remember where the last one ran."""

    def __init__(
        self,
        actor: str = "cli",
        *,
        socket: Path | None = None,
        connect: Connect = ApiClient,
        progress: ops.Progress | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.actor = actor
        self.socket = socket or socket_path()
        self.connect = connect
        self.progress, self.notify = progress, notify
        #: where the last call ran
        self.served_by: Literal["daemon", "local"] | None = None

    def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run ``op``: validated here first, so a bad argument costs no round trip."""
        ops.validate(op, args)
        spec = opspec.SPECS[op]
        daemon = self.connect(self.socket, spec.reply_timeout_s)
        if spec.where != "local" and daemon.available():
            if self.progress is not None and self.notify is not None:
                self.notify(
                    f"{op} runs in the daemon ({self.socket}); its progress goes to "
                    "the daemon's log"
                )
            try:
                result = daemon.call(op, args)
            except DaemonUnavailable as err:
                if spec.where == "daemon" or not _never_reached(err):
                    raise
            except GuardrailViolation:  # this user may not use the socket
                if spec.privileged or spec.where == "daemon":
                    raise
            else:
                self.served_by = "daemon"
                return result
        if spec.where == "daemon":
            raise DaemonUnavailable(
                f"no daemon socket answers at {self.socket}; {op} "
                "talks to the running daemon (systemctl start schedagent)"
            )
        result = ops.call(op, args, self.actor, progress=self.progress, notify=self.notify)
        self.served_by = "local"
        return result
