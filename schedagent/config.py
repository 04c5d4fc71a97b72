"""Process-wide locations and settings shared by every layer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from schedagent.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)

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


def load_yaml_model(path: Path, model: type[ModelT], what: str, keys_hint: str) -> ModelT:
    """Read a YAML file into a pydantic model; every error names the file and the field.

    ``what`` names the document ("a policy definition"), ``keys_hint`` what a mapping in
    it holds (said when the top level is not a mapping).
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path} does not exist; create it as {what}") from err
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}; fix the syntax") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a YAML mapping with {keys_hint}, got "
                          f"{type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())
        raise ConfigError(f"{path} is not {what}: {problems}") from err
