"""The policy repository: ``policies/<name>/policy.yaml`` + ``<name>.bpf.c``.

The YAML is validated with a pydantic schema at load time. A policy can also
be a bare ``.bpf.c`` file an administrator brings: it then has no metadata, and
its tunables are whatever ``const volatile`` globals it declares.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schedagent.config import DATA_ROOT, load_yaml_model, state_dir
from schedagent.errors import ConfigError, PolicyNotFound, TunableError
from schedagent.models import WorkloadClass

POLICIES_DIR = DATA_ROOT / "policies"
_POLICY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Tunable(BaseModel):
    """One ``const volatile`` knob of a policy."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["u64", "u32", "s64", "s32", "bool"]
    unit: str
    default: int
    min: int
    max: int
    description: str

    @model_validator(mode="after")
    def _bounds(self) -> Tunable:
        if not self.min <= self.default <= self.max:
            raise ValueError(f"default {self.default} is outside [{self.min}, {self.max}]")
        return self


class Provenance(BaseModel):
    """Where a policy came from."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["builtin", "synthesized"] = "builtin"
    parent: str | None = None
    model: str | None = None
    date: dt.date | None = None


#: What a policy may declare it does with cgroup CPU controls (``cgroup:`` in policy.yaml).
CgroupSupport = Literal["weight", "bandwidth"]


class PolicyMeta(BaseModel):
    """The schema of ``policy.yaml``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_POLICY_NAME.pattern)
    summary: str
    intent: str
    good_for: list[WorkloadClass] = []
    bad_for: list[WorkloadClass] = []
    tunables: dict[str, Tunable] = {}
    #: names of the sa_stats counter slots, in enum order
    stats: list[str] = []
    requires: list[str] = []
    #: cgroup CPU controls the policy honours, each backed by sched_ext's cgroup ops in its
    #: source: ``weight`` (cpu.weight: ops.cgroup_init + ops.cgroup_set_weight) and
    #: ``bandwidth`` (cpu.max: ops.cgroup_set_bandwidth). The engine runs a policy on the
    #: whole system only when it honours every control set on a populated cgroup (issue 17).
    cgroup: list[CgroupSupport] = Field(
        default=[],
        description="cgroup controls the policy implements: weight (cpu.weight), "
        "bandwidth (cpu.max)",
    )
    status: Literal["experimental", "stable"] = "experimental"
    provenance: Provenance = Provenance()


class PolicySource(BaseModel):
    """A resolved policy: its source file, and metadata when it is from the repository."""

    model_config = ConfigDict(frozen=True)
    name: str
    source: Path
    meta: PolicyMeta | None = None

    def source_hash(self) -> str:
        """sha256 of the source text (what quarantine and artifacts are keyed by)."""
        return hashlib.sha256(self.source.read_bytes()).hexdigest()

    def resolve_tunables(self, overrides: dict[str, int]) -> dict[str, int]:
        """Defaults overlaid with validated overrides (bounds from the YAML)."""
        if self.meta is None:
            return dict(overrides)
        values = {k: t.default for k, t in self.meta.tunables.items()}
        for key, value in overrides.items():
            spec = self.meta.tunables.get(key)
            if spec is None:
                known = ", ".join(sorted(self.meta.tunables)) or "(none)"
                raise TunableError(self.name, key, f"unknown tunable; {self.name} has: {known}")
            if not spec.min <= value <= spec.max:
                raise TunableError(
                    self.name,
                    key,
                    f"{value} is outside [{spec.min}, {spec.max}] {spec.unit}; "
                    f"choose a value in range (default {spec.default})",
                )
            values[key] = value
        return values


def load_meta(path: Path) -> PolicyMeta:
    """Parse and validate one ``policy.yaml``."""
    return load_yaml_model(
        path, PolicyMeta, "valid against the policy schema", "name, summary, intent, tunables"
    )


def builtin_names(root: Path = POLICIES_DIR) -> list[str]:
    """Names of the policies in the repository."""
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / "policy.yaml").exists())


def synthesized_dir() -> Path:
    """Where synthesized policies that won a tune are kept, one directory each like the
    repository's: under the state directory, never in the checkout's ``policies/``."""
    return state_dir() / "synthesized"


def synthesized_names() -> list[str]:
    """Names of the synthesized policies kept so far (``synthesized_dir()``)."""
    return builtin_names(synthesized_dir())


def known_names() -> list[str]:
    """Every name ``resolve`` finds: the repository's and the kept synthesized ones."""
    try:
        kept = synthesized_names()
    except OSError:  # no usable state directory: nothing can have been kept there
        kept = []
    return sorted({*builtin_names(), *kept})


def _synthesized(spec: str) -> Path | None:
    """The kept synthesized policy named ``spec`` (its directory), if there is one."""
    if not _POLICY_NAME.match(spec):
        return None
    try:
        directory = synthesized_dir() / spec
    except OSError:  # no usable state directory: nothing can have been kept there
        return None
    return directory if (directory / "policy.yaml").is_file() else None


def resolve(spec: str, root: Path = POLICIES_DIR) -> PolicySource:
    """A repository policy by name, a policy directory by path, or a ``.bpf.c`` file by path.

    A name that is not in the repository may be a synthesized policy that won a tune,
    kept in ``synthesized_dir()``.
    """
    as_dir = Path(spec)
    if "/" in spec and (as_dir / "policy.yaml").is_file():
        # a policy directory outside the repository (e.g. a synthesized one being gated)
        return resolve(as_dir.name, as_dir.resolve().parent)
    candidate = root / spec
    if "/" not in spec and (candidate / "policy.yaml").exists():
        meta = load_meta(candidate / "policy.yaml")
        source = candidate / f"{spec}.bpf.c"
        if meta.name != spec:
            raise ConfigError(
                f"{candidate}/policy.yaml says name {meta.name!r}; it must equal "
                f"the directory name {spec!r}"
            )
        return PolicySource(name=spec, source=source, meta=meta)
    kept = _synthesized(spec) if root == POLICIES_DIR else None
    if kept is not None:
        return resolve(spec, kept.parent)
    path = Path(spec)
    if path.suffix == ".c" or path.exists():
        if not path.is_file():
            raise PolicyNotFound(spec, builtin_names(root))
        try:
            path.read_bytes()
        except OSError as err:
            raise ConfigError(
                f"cannot read {path}: {err.strerror}; check the path and its permissions"
            ) from err
        return PolicySource(
            name=path.name.removesuffix(".bpf.c").removesuffix(".c"), source=path.resolve()
        )
    raise PolicyNotFound(spec, builtin_names(root))


def parse_overrides(pairs: list[str]) -> dict[str, int]:
    """``["slice_ns=5000000", "x=0x10"]`` -> ``{"slice_ns": 5000000, "x": 16}``."""
    out: dict[str, int] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set slice_ns=5000000")
        text = value.strip().lower()
        if text in ("true", "false"):
            out[key.strip()] = int(text == "true")
            continue
        try:
            out[key.strip()] = int(text.replace("_", ""), 0)
        except ValueError as err:
            raise TunableError("(cli)", key, f"{value!r} is not an integer") from err
    return out
