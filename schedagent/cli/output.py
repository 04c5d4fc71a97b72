"""Printing helpers shared by the CLI commands."""

from __future__ import annotations

import dataclasses
import json
import sys
from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer

from schedagent.errors import SchedagentError


def to_jsonable(value: object) -> object:
    """Convert dataclasses, enums and paths into JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value


def emit_json(value: object) -> None:
    """Print ``value`` as indented JSON on stdout."""
    print(json.dumps(to_jsonable(value), indent=2, sort_keys=False))


def fail(err: BaseException, json_out: bool = False) -> NoReturn:
    """Report ``err`` on stderr (or as JSON) and exit with its exit code."""
    if isinstance(err, (typer.Exit, SystemExit)):
        raise err
    if isinstance(err, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    if isinstance(err, SchedagentError):
        code = err.exit_code
        fields = {k: to_jsonable(v) for k, v in vars(err).items() if not k.startswith("_")}
    else:
        code = 1
        fields = {}
    if json_out:
        emit_json({"error": {"type": type(err).__name__, "message": str(err), **fields}})
    else:
        print(f"error: {err}", file=sys.stderr)
    raise SystemExit(code)
