"""Process-wide locations and settings shared by every layer."""

from __future__ import annotations

import os
from pathlib import Path

#: The project checkout this package was imported from (holds policies/, bpf/ ...).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Return schedagent's cache directory, creating it if needed.

    ``SCHEDAGENT_CACHE_DIR`` wins; otherwise ``$XDG_CACHE_HOME/schedagent`` or
    ``~/.cache/schedagent``.
    """
    explicit = os.environ.get("SCHEDAGENT_CACHE_DIR")
    if explicit:
        path = Path(explicit)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "schedagent"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir() -> Path:
    """Return the directory for persistent state (the SQLite store).

    ``SCHEDAGENT_STATE_DIR`` wins; root uses ``/var/lib/schedagent``, others
    ``~/.local/state/schedagent``.
    """
    explicit = os.environ.get("SCHEDAGENT_STATE_DIR")
    if explicit:
        path = Path(explicit)
    elif os.geteuid() == 0:
        path = Path("/var/lib/schedagent")
    else:
        path = Path.home() / ".local" / "state" / "schedagent"
    path.mkdir(parents=True, exist_ok=True)
    return path
