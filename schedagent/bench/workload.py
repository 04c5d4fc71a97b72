"""Benchmark workload definitions (``workloads/<name>/workload.yaml``).

A definition says what to run, how to read its metrics from what it prints, which
way each metric is better, and the "work done" count that must be equal between
runs: a run that finished "faster" by doing less is not a faster run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schedagent.config import DATA_ROOT, cache_dir, load_yaml_model
from schedagent.errors import ConfigError, ToolMissing
from schedagent.models import WorkloadClass

WORKLOADS_DIR = DATA_ROOT / "workloads"


class MetricSpec(BaseModel):
    """One number read from a run's output."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    unit: str
    direction: Literal["lower", "higher"]
    primary: bool = False
    #: where to read it: the command's stdout (default) or a file it wrote ({tmp}/...)
    file: str | None = None
    #: a dotted path into JSON/YAML output (list items by index) ...
    path: str | None = None
    #: ... or a regex whose first group is the number, on text output
    regex: str | None = None
    scale: float = 1.0
    #: divide by the command's own wall-clock seconds: a fixed amount of work per run
    #: becomes a rate over the whole run. (stress-ng's real-time rate is per instance
    #: from its own start: under run-to-completion scheduling, half its instances
    #: start late and finish fast, and the rate doubles while the run takes as long.)
    per_wall_s: bool = False

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                if re.compile(v).groups < 1:
                    raise ValueError("needs one capturing group around the number")
            except re.error as err:
                raise ValueError(f"not a valid regex: {err}") from err
        return v

    def model_post_init(self, _ctx: Any) -> None:
        if (self.path is None) == (self.regex is None):
            raise ValueError(f"metric {self.name}: give exactly one of path or regex")


class WorkDoneSpec(BaseModel):
    """The count of work a run did; every valid run of a workload must report the same."""

    model_config = ConfigDict(extra="forbid")
    file: str | None = None
    path: str | None = None
    regex: str | None = None

    def model_post_init(self, _ctx: Any) -> None:
        if (self.path is None) == (self.regex is None):
            raise ValueError("work_done: give exactly one of path or regex")


class BuildSpec(BaseModel):
    """A C program built in place (in the guest) before the first run."""

    model_config = ConfigDict(extra="forbid")
    source: str
    flags: list[str] = Field(default_factory=lambda: ["-O2", "-pthread"])


class WorkloadDef(BaseModel):
    """A validated ``workload.yaml``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    summary: str
    slo_class: WorkloadClass
    command: list[str] = Field(min_length=1)
    output: Literal["json", "text"] = "text"
    params: dict[str, int | float | str] = Field(default_factory=dict)
    #: overlay for small, quick runs (tests)
    quick: dict[str, int | float | str] = Field(default_factory=dict)
    #: named load levels, each an overlay on params; every level is its own comparison
    levels: dict[str, dict[str, int | float | str]] = Field(default_factory=dict)
    #: started before the command and stopped with SIGINT after it (e.g. CPU hogs)
    background: list[str] | None = None
    metrics: list[MetricSpec] = Field(min_length=1)
    work_done: WorkDoneSpec
    build: BuildSpec | None = None
    #: latency workloads also run alone (no background) under EEVDF: the floor
    latency: bool = False
    #: pid of this process is the SLO target for target-aware policies: "command"
    target: Literal["command"] = "command"
    timeout_s: float = Field(default=300.0, gt=0)

    def model_post_init(self, _ctx: Any) -> None:
        primaries = [m.name for m in self.metrics if m.primary]
        if len(primaries) != 1:
            raise ValueError(f"exactly one metric must be primary, found {primaries or 'none'}")

    @property
    def primary(self) -> MetricSpec:
        return next(m for m in self.metrics if m.primary)


@dataclass(frozen=True, slots=True)
class Workload:
    """A definition and the directory it lives in."""

    spec: WorkloadDef
    directory: Path

    @property
    def name(self) -> str:
        return self.spec.name

    def level_names(self) -> list[str]:
        return list(self.spec.levels) or ["default"]

    def variables(self, level: str, quick: bool, tmp: Path, binary: Path | None) -> dict[str, str]:
        """Everything a ``{name}`` in the command may refer to."""
        cpus = os.cpu_count() or 1
        values: dict[str, Any] = {
            "cpus": cpus,
            "cpus_x2": 2 * cpus,
            "tmp": tmp,
            "dir": self.directory,
        }
        values.update(self.spec.params)
        if quick:
            values.update(self.spec.quick)
        if level != "default":
            if level not in self.spec.levels:
                raise ConfigError(
                    f"workload {self.name} has no load level {level!r}; "
                    f"its levels are {', '.join(self.level_names())}"
                )
            values.update(self.spec.levels[level])
        if binary is not None:
            values["build"] = binary
        return {k: str(v) for k, v in values.items()}

    def argv(self, template: list[str], variables: dict[str, str]) -> list[str]:
        try:
            return [part.format(**variables) for part in template]
        except (KeyError, IndexError) as err:
            raise ConfigError(
                f"workload {self.name}: {template} refers to {err}, which is "
                f"not a parameter; known: {', '.join(sorted(variables))}"
            ) from err


def load(directory: Path) -> Workload:
    """Parse and validate one ``workload.yaml``, with the file named in every error."""
    path = directory / "workload.yaml"
    spec = load_yaml_model(
        path, WorkloadDef, "a valid workload definition", "name, command, metrics"
    )
    if spec.name != directory.name:
        raise ConfigError(
            f"{path}: name {spec.name!r} must equal its directory name {directory.name!r}"
        )
    return Workload(spec, directory)


def all_workloads(root: Path = WORKLOADS_DIR) -> list[Workload]:
    return [load(d) for d in sorted(root.iterdir()) if (d / "workload.yaml").is_file()]


def resolve(name: str, root: Path = WORKLOADS_DIR) -> Workload:
    directory = root / name
    if not (directory / "workload.yaml").is_file():
        known = ", ".join(w.name for w in all_workloads(root))
        raise ConfigError(
            f"unknown workload {name!r}; built-in workloads are: {known}. "
            "See `schedagent bench list`."
        )
    return load(directory)


def build(wl: Workload) -> Path | None:
    """Compile the workload's C program once per source hash; None if it has none."""
    if wl.spec.build is None:
        return None
    source = wl.directory / wl.spec.build.source
    text = source.read_bytes()
    key = hashlib.sha256(text + " ".join(wl.spec.build.flags).encode()).hexdigest()[:16]
    out = cache_dir() / "workloads" / f"{wl.name}-{key}"
    if out.exists():
        return out
    compiler = next((c for c in ("cc", "gcc", "clang") if _which(c)), None)
    if compiler is None:
        raise ToolMissing(
            "a C compiler (cc, gcc or clang)",
            f"build the {wl.name} workload",
            "install clang or gcc",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    proc = subprocess.run(
        [compiler, *wl.spec.build.flags, "-o", str(tmp), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ConfigError(f"building {source} failed:\n{proc.stderr.strip()[-2000:]}")
    tmp.replace(out)
    return out


def _which(name: str) -> bool:
    return any(os.access(Path(d) / name, os.X_OK) for d in os.environ.get("PATH", "").split(":"))


class ExtractError(ValueError):
    """A metric could not be read from a run's output."""


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, list):
            try:
                data = data[int(part)]
            except (ValueError, IndexError) as err:
                raise ExtractError(f"{path}: no list item {part!r}") from err
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            raise ExtractError(f"{path}: no key {part!r}")
    return data


def _source_text(file: str | None, stdout: str, variables: dict[str, str]) -> str:
    if file is None:
        return stdout
    path = Path(file.format(**variables))
    try:
        return path.read_text()
    except OSError as err:
        raise ExtractError(f"{path} was not written ({err.strerror})") from err


def _parse(text: str, kind: str) -> Any:
    try:
        return json.loads(text) if kind == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ExtractError(f"output is not valid {kind}: {str(err)[:200]}") from err


def _extract(
    file: str | None,
    path: str | None,
    regex: str | None,
    output: str,
    stdout: str,
    variables: dict[str, str],
) -> str:
    text = _source_text(file, stdout, variables)
    if regex is not None:
        match = re.search(regex, text)
        if match is None:
            raise ExtractError(f"/{regex}/ did not match the output")
        return " ".join(match.groups())
    assert path is not None
    kind = "yaml" if file is not None and file.endswith((".yaml", ".yml")) else output
    return str(_dig(_parse(text, kind if kind in ("json", "yaml") else "json"), path))


def extract_metrics(
    wl: Workload,
    stdout: str,
    variables: dict[str, str],
    with_background: bool = True,
    wall_s: float | None = None,
) -> dict[str, float]:
    """Every metric of one run; background metrics are skipped when it ran alone.
    ``wall_s`` is the command's wall-clock time, which ``per_wall_s`` metrics need."""
    values: dict[str, float] = {}
    for m in wl.spec.metrics:
        if (
            m.file is not None
            and not with_background
            and m.file in " ".join(wl.spec.background or [])
        ):
            continue
        raw = _extract(m.file, m.path, m.regex, wl.spec.output, stdout, variables)
        try:
            values[m.name] = float(raw) * m.scale
        except ValueError as err:
            raise ExtractError(f"metric {m.name}: {raw!r} is not a number") from err
        if m.per_wall_s:
            if wall_s is None or wall_s <= 0:
                raise ExtractError(f"metric {m.name}: is per second, and no run time was given")
            values[m.name] /= wall_s
    return values


def extract_work_done(wl: Workload, stdout: str, variables: dict[str, str]) -> str:
    w = wl.spec.work_done
    return _extract(w.file, w.path, w.regex, wl.spec.output, stdout, variables)


def describe(wl: Workload) -> dict[str, object]:
    """What ``bench list`` shows."""
    return {
        "name": wl.name,
        "summary": wl.spec.summary,
        "slo_class": wl.spec.slo_class,
        "primary_metric": f"{wl.spec.primary.name} ({wl.spec.primary.unit}, "
        f"{wl.spec.primary.direction} is better)",
        "levels": wl.level_names(),
        "latency_floor": wl.spec.latency,
        "command": " ".join(wl.spec.command),
        "background": " ".join(wl.spec.background) if wl.spec.background else None,
    }
