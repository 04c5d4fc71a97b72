"""What every command shares: the client, option bounds from the operation models, progress."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from schedagent.client import Client

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def spec_option(model: type[BaseModel], name: str, *decls: str) -> Any:
    """A typer option whose bounds and help are the operation model's field's, declared once
    in ``schedagent.opspec`` (or the models it builds on)."""
    field = model.model_fields[name]
    bounds = {
        type(m).__name__: getattr(m, type(m).__name__.lower())
        for m in field.metadata
        if type(m).__name__ in ("Ge", "Le")
    }
    text = field.description or ""
    return typer.Option(
        *decls, min=bounds.get("Ge"), max=bounds.get("Le"), help=text[:1].upper() + text[1:] or None
    )


def args(**values: Any) -> dict[str, Any]:
    """Operation arguments from options, leaving out the ones not given (None)."""
    return {k: v for k, v in values.items() if v is not None}


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ProgressBar:
    """One line on stderr: redrawn in place on a terminal, a line per step otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 24
        filled = width * done // max(total, 1)
        elapsed = time.monotonic() - self.started
        eta = f", ~{elapsed / done * (total - done):.0f} s left" if done else ""
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed:.0f} s{eta}  {what}"
        )
        if self.tty:
            sys.stderr.write("\r\033[K" + line + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def client(json_out: bool = False, *, steps: bool = False) -> Client:
    """The CLI's client: notices on stderr unless ``--json``, a progress bar for ``steps``."""
    return Client(
        "cli", progress=ProgressBar() if steps else None, notify=None if json_out else _stderr
    )
