"""``schedagent policies``, ``status`` and ``rollback``."""

from __future__ import annotations

import typer

policies_app = typer.Typer(help="Verify, load and inspect sched_ext policies.",
                           no_args_is_help=True)


def status() -> None:
    """Show the active policy and sched_ext state."""
    raise NotImplementedError


def rollback() -> None:
    """Detach the active policy and return to EEVDF."""
    raise NotImplementedError
