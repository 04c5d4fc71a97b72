"""The typed operations every remote front end offers: the MCP server and the daemon socket.

Each operation takes a JSON object, validates it against its pydantic model (the
socket's clients are untrusted, so validation happens here and not only in the MCP
schema), calls the service layer and returns a JSON-ready dict whose size is bounded.
``call`` is the one entry point; errors come back as ``SchedagentError`` (or
``OpError`` for bad arguments) carrying a message that names the valid choices.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, is_dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schedagent import services
from schedagent.execution import engine
from schedagent.bench import workload as bench_workload
from schedagent.bench.runner import Arm
from schedagent.errors import ConfigError, SchedagentError
from schedagent.kernel import bccprobes, cgroupfs, partial, procstat, scx
from schedagent.policy import repo
from schedagent.models import Target

#: No single string in a result is longer than this (policy sources, verifier logs).
MAX_TEXT = 16_000
#: No list in a result has more items than this.
MAX_ITEMS = 200


class OpError(ConfigError):
    """An operation was called with arguments it cannot accept."""


#: The uid of the peer a request came from. The daemon socket sets it per connection
#: (SO_PEERCRED); None means an in-process caller with this process's rights (CLI, MCP
#: run as root). A context variable, so the socket's handler signature stays the same.
CALLER_UID: ContextVar[int | None] = ContextVar("schedagent_caller_uid", default=None)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetArgs(_Args):
    """A pid (with its threads and children) or a cgroup v2 path."""

    pid: int | None = Field(None, ge=1, le=4_194_304)
    cgroup: str | None = Field(None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _one(self) -> TargetArgs:
        if (self.pid is None) == (self.cgroup is None):
            raise ValueError("give exactly one of pid or cgroup")
        return self

    def target(self, *, canary: bool = False) -> Target:
        """The checked target: a pid the caller may act on, or a confined cgroup path."""
        if self.pid is not None:
            partial.check_pid(self.pid, CALLER_UID.get(), canary=canary)
            return Target(pid=self.pid)
        assert self.cgroup is not None
        return Target(cgroup=cgroupfs.normalize(self.cgroup))


class ProfileArgs(TargetArgs):
    duration_s: float = Field(5.0, ge=0.5, le=120)


class NameArgs(_Args):
    name: str = Field(min_length=1, max_length=64)


class VerifyArgs(_Args):
    name: str | None = Field(None, min_length=1, max_length=64)
    source: str | None = Field(None, min_length=1, max_length=4 * 64 * 1024)
    tunables: dict[str, int] = Field(default_factory=dict, max_length=32)

    @model_validator(mode="after")
    def _one(self) -> VerifyArgs:
        if (self.name is None) == (self.source is None):
            raise ValueError("give exactly one of name (a repository policy) or source "
                             "(sched_ext BPF C)")
        return self


class LoadArgs(TargetArgs):
    policy: str = Field(min_length=1, max_length=64,
                        description="artifact_id from verify_policy, or a verified policy name")
    tunables: dict[str, int] = Field(default_factory=dict, max_length=32)
    duration_s: float = Field(10.0, ge=1, le=600)


class BenchArgs(_Args):
    workload: str = Field(min_length=1, max_length=64)
    policy: str = Field(min_length=1, max_length=64)
    runs: int = Field(3, ge=2, le=10)
    quick: bool = True


class HistoryArgs(_Args):
    limit: int = Field(20, ge=1, le=200)


class NoArgs(_Args):
    pass


def bounded(value: Any) -> Any:
    """JSON-ready copy of ``value`` with long strings and lists cut, saying so."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dict):
        return {str(k): bounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = list(value)
        out = [bounded(v) for v in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            out.append(f"... {len(items) - MAX_ITEMS} more items cut")
        return out
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + f"\n... {len(value) - MAX_TEXT} more characters cut"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _policy_name(name: str) -> str:
    known = repo.builtin_names()
    if name not in known:
        raise OpError(f"unknown policy {name!r}; valid choices: {', '.join(known)}")
    return name


def _system_snapshot(_: NoArgs) -> dict[str, Any]:
    sysnow = procstat.read_system()
    st = services.status(events=5)
    return {"sched_ext": asdict(st.sched_ext), "active": st.active,
            "owner_alive": st.owner_alive,
            "topology": asdict(procstat.read_topology()), "loadavg_1m": sysnow.loadavg_1m,
            "procs_running": sysnow.procs_running,
            "psi_total_us": {"cpu": sysnow.psi_cpu_some_us, "memory": sysnow.psi_mem_some_us,
                             "io": sysnow.psi_io_some_us},
            "bcc": bccprobes.bcc_available(), "root": os.geteuid() == 0,
            "quarantine": st.quarantine, "recent_events": st.events}


def _profile(a: ProfileArgs) -> dict[str, Any]:
    return services.profile_workload(a.target(), a.duration_s).to_json()


def _runqueue_latency(a: ProfileArgs) -> dict[str, Any]:
    target = a.target()
    if not bccprobes.bcc_available():
        window = procstat.observe(target, a.duration_s)
        waits = [(last.wait_ns - window.first[t].wait_ns,
                  last.slices - window.first[t].slices) for t, last in window.last.items()]
        wait_ns, slices = sum(w for w, _ in waits), sum(s for _, s in waits)
        return {"source": "schedstat (bcc is not installed, so no histogram; install bcc "
                          "for percentiles)",
                "mean_wait_us": wait_ns / 1000 / slices if slices else 0.0,
                "timeslices": slices, "duration_s": window.duration_s}
    rep = services.deep_probe(target, a.duration_s)
    return {"source": "bcc: " + ", ".join(rep.attach_points), "wakeups": rep.wakeups,
            "wakeup_latency_us": {f"p{q}": round(rep.wakeup_fine.percentile(q), 1)
                                  for q in (50, 90, 99)},
            "histogram_log2_us": rep.wakeup_latency.buckets, "migrations": rep.migrations,
            "duration_s": rep.duration_s,
            "probe_overhead_pct_of_one_cpu": round(rep.overhead_pct_of_one_cpu, 3)}


def _list_policies(_: NoArgs) -> dict[str, Any]:
    return {"policies": services.list_policies()}


def _show_policy(a: NameArgs) -> dict[str, Any]:
    detail = services.show_policy(_policy_name(a.name))
    out = asdict(detail)
    out["source_text"] = repo.resolve(detail.name).source.read_text()
    return out


def _verify(a: VerifyArgs, actor: str) -> dict[str, Any]:
    spec = _policy_name(a.name) if a.name else services.stage_source(a.source or "")
    art = services.verify_artifact(spec, a.tunables, actor)
    return {"artifact_id": art.artifact_id, "policy": art.policy, "tunables": art.tunables,
            "source_hash": art.source_hash, "passed": ["static gate", "clang",
                                                       "object check", "kernel verifier"],
            "next": f"load_policy(policy={art.artifact_id!r}, pid=..., duration_s=...)"}


def _load(a: LoadArgs, actor: str) -> dict[str, Any]:
    target = a.target(canary=True)  # a refused target costs nothing further
    art = services.verified_artifact(a.policy, a.tunables)
    seen: list[str | None] = []
    req = engine.RunRequest(art.spec, art.tunables, target, duration_s=a.duration_s,
                            actor=actor)
    outcome = services.run_policy(req, lambda o: seen.append(scx.read_state().ops))
    return {"artifact_id": art.artifact_id, "policy": art.policy, "mode": "partial (canary)",
            "ops_while_attached": seen[0] if seen else None, "outcome": asdict(outcome),
            "sched_ext_after": asdict(scx.read_state())}


def _benchmark(a: BenchArgs, actor: str) -> dict[str, Any]:
    names = [w.name for w in bench_workload.all_workloads()]
    if a.workload not in names:
        raise OpError(f"unknown workload {a.workload!r}; valid choices: {', '.join(names)}")
    art = services.verified_artifact(a.policy, {})
    result = services.bench_compare(a.workload, [Arm(art.spec, art.tunables)], runs=a.runs,
                                    quick=a.quick)
    return {"workload": a.workload, "artifact_id": art.artifact_id,
            "arms": [{"policy": arm.arm, "verdict": arm.verdict, "reason": arm.reason}
                     for arm in result.arms],
            "baseline": result.baseline_medians, "floor": result.floor_medians}


def _status(_: NoArgs) -> dict[str, Any]:
    return asdict(services.status(events=20))


def _rollback(_: NoArgs) -> dict[str, Any]:
    return asdict(services.rollback())


def _history(a: HistoryArgs) -> dict[str, Any]:
    store = services.open_store()
    try:
        return {"events": store.events(a.limit), "audit": store.audit_records(a.limit)}
    finally:
        store.close()


_Op = tuple[type[_Args], Callable[..., dict[str, Any]], bool]

#: name -> (argument model, handler, whether the handler takes the actor)
OPS: dict[str, _Op] = {
    "system_snapshot": (NoArgs, _system_snapshot, False),
    "profile_workload": (ProfileArgs, _profile, False),
    "runqueue_latency": (ProfileArgs, _runqueue_latency, False),
    "list_policies": (NoArgs, _list_policies, False),
    "show_policy": (NameArgs, _show_policy, False),
    "verify_policy": (VerifyArgs, _verify, True),
    "load_policy": (LoadArgs, _load, True),
    "benchmark": (BenchArgs, _benchmark, True),
    "status": (NoArgs, _status, False),
    "rollback": (NoArgs, _rollback, False),
    "history": (HistoryArgs, _history, False),
}

#: operations that change kernel state (the daemon socket reserves them for root/group)
PRIVILEGED = frozenset({"verify_policy", "load_policy", "benchmark", "rollback"})


def validate(name: str, args: object) -> _Args:
    """The argument model for an operation, or an OpError naming what is wrong."""
    if name not in OPS:
        raise OpError(f"unknown operation {name!r}; valid choices: {', '.join(sorted(OPS))}")
    if not isinstance(args, dict):
        raise OpError(f"{name}: arguments must be a JSON object, got {type(args).__name__}")
    model = OPS[name][0]
    try:
        return model.model_validate(args)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                             for e in err.errors())
        fields = ", ".join(model.model_fields) or "none"
        raise OpError(f"{name}: {problems} (accepted arguments: {fields})") from err


def call(name: str, args: object, actor: str) -> dict[str, Any]:
    """Validate and run one operation; audit it; return a bounded, JSON-ready result."""
    parsed = validate(name, args)
    _, handler, wants_actor = OPS[name]
    started = time.monotonic()
    result = handler(parsed, actor) if wants_actor else handler(parsed)
    out = bounded(result)
    json.dumps(out)  # a result that is not JSON-ready is a bug here, not in the client
    if name in PRIVILEGED:
        services.audit(actor, name, parsed.model_dump(exclude={"source"}),
                       {"ok": True, "wall_s": round(time.monotonic() - started, 2)})
    return out


__all__ = ["OPS", "PRIVILEGED", "OpError", "SchedagentError", "bounded", "call", "validate"]
