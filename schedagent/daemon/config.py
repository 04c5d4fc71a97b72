"""The daemon's configuration file (``/etc/schedagent/config.yaml``), validated.

Match patterns choose targets only. They never decide a workload's class: the
profile does that, from behaviour.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schedagent.config import load_yaml_model
from schedagent.errors import ConfigError
from schedagent.profile.model import parse_slo

DEFAULT_PATH = Path("/etc/schedagent/config.yaml")
DEFAULT_SOCKET = Path("/run/schedagent/schedagent.sock")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Match(_Strict):
    """How to find a target: a systemd unit, a cgroup path, or a command-line pattern."""

    unit: str | None = Field(None, pattern=r"^[\w@.:-]+\.(service|scope|slice)$")
    cgroup: str | None = Field(None, min_length=1)
    command: str | None = Field(None, min_length=1, max_length=500,
                                description="regular expression searched in the command line")

    @model_validator(mode="after")
    def _one(self) -> Match:
        given = [k for k in ("unit", "cgroup", "command") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of unit, cgroup or command")
        if self.command:
            try:
                re.compile(self.command)
            except re.error as err:
                raise ValueError(f"command is not a valid regular expression: {err}") from err
        return self


class TargetConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    match: Match
    slo: str | None = Field(None, description='explicit SLO, e.g. "p99_latency<=2ms"')
    latency_log: str | None = Field(
        None, max_length=4096, description="the target's access log (one request per line "
        "ending in its latency in µs): tune judges windows on its p99")

    @field_validator("slo")
    @classmethod
    def _slo(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_slo(value)
            except ConfigError as err:
                raise ValueError(str(err)) from err
        return value


class Budgets(_Strict):
    budget_s: float = Field(300.0, ge=10, le=7200)
    max_evals: int = Field(12, ge=1, le=200)
    observe_s: float = Field(5.0, ge=0.5, le=300)
    window_s: float = Field(2.0, ge=0.5, le=60)
    rounds: int = Field(4, ge=2, le=20)
    max_candidates: int = Field(3, ge=1, le=10)


class Guard(_Strict):
    """When an active policy is rolled back."""

    check_interval_s: float = Field(5.0, ge=0.5, le=600)
    window_s: float = Field(2.0, ge=0.5, le=60)
    #: the SLO metric this many times worse than EEVDF's median is a regression ...
    regression_ratio: float = Field(1.5, gt=1.0, le=100)
    #: ... in this many windows in a row
    regression_windows: int = Field(2, ge=1, le=20)
    #: any task runnable but waiting this long (mean per timeslice) is starvation
    max_runnable_wait_ms: float = Field(2000.0, ge=10, le=60_000)
    #: rollbacks of one policy before it is quarantined on this kernel
    quarantine_after: int = Field(2, ge=1, le=100)
    backoff_s: float = Field(60.0, ge=0, le=86_400)
    backoff_max_s: float = Field(3600.0, ge=0, le=86_400)


class DaemonConfig(_Strict):
    mode: Literal["observe", "propose", "auto"] = "observe"
    agent: Literal["offline", "anthropic"] = "offline"
    targets: list[TargetConfig] = Field(min_length=1, max_length=64)
    budgets: Budgets = Field(default_factory=Budgets)
    guard: Guard = Field(default_factory=Guard)
    #: hysteresis: never switch one target's policy more often than this
    min_switch_interval_s: float = Field(60.0, ge=0, le=86_400)
    #: a persistent SLO violation under EEVDF re-tunes after this many checks
    violation_checks: int = Field(6, ge=1, le=1000)
    poll_interval_s: float = Field(5.0, ge=0.2, le=3600)
    #: a newly started process is profiled only once it is this old (start-up is no phase)
    settle_s: float = Field(10.0, ge=0, le=3600)
    socket: Path = DEFAULT_SOCKET
    socket_group: str = "schedagent"
    #: serve Prometheus text metrics on 127.0.0.1:PORT (off when absent)
    prometheus_port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _unique(self) -> DaemonConfig:
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {', '.join(dupes)}")
        return self


def load(path: Path) -> DaemonConfig:
    """Read and validate a config file; every problem names its field and the fix."""
    return load_yaml_model(path, DaemonConfig, "a valid daemon config (see "
                           "scripts/config.example.yaml; or pass --config PATH)",
                           "at least `targets:`")
