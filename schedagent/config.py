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
#: Installed from a wheel, this is site-packages and holds none of them: use
#: :data:`DATA_ROOT` for the policies, BPF headers, probes and workloads.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Where the built-in policies/, bpf/ and workloads/ are: the checkout when running from
#: one (an editable install, or the testbed, which shares the checkout), else the copy the
#: wheel ships inside the package (setup.py's build step puts it in ``schedagent/_data``).
DATA_ROOT = (
    PROJECT_ROOT
    if (PROJECT_ROOT / "policies").is_dir() and (PROJECT_ROOT / "bpf").is_dir()
    else Path(__file__).resolve().parent / "_data"
)


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


#: Read-only files prepared ahead of need (vmlinux.h, objects, the BTF index); the
#: testbed image carries them. Looked up after the cache, never written at run time.
PREBUILT_ENV = "SCHEDAGENT_PREBUILT_DIR"
# Not under /var/cache: virtme-ng mounts a tmpfs there in the testbed guest.
DEFAULT_PREBUILT_DIR = Path("/opt/schedagent/prebuilt")


def prebuilt_dir() -> Path:
    """Where prepared files are looked up after the cache (``$SCHEDAGENT_PREBUILT_DIR``)."""
    return Path(os.environ.get(PREBUILT_ENV) or DEFAULT_PREBUILT_DIR)


def find_cached(rel: Path) -> Path | None:
    """``rel`` under the cache directory, else under the prebuilt directory, else None."""
    for base in (cache_dir(), prebuilt_dir()):
        if (base / rel).exists():
            return base / rel
    return None


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
        raise ConfigError(
            f"{path} must be a YAML mapping with {keys_hint}, got {type(raw).__name__}"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'top level'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ConfigError(f"{path} is not {what}: {problems}") from err
