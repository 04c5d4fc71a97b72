"""The operations table: each declaration in ``schedagent.opspec`` bound to its handler.

Every front end runs operations through here: the CLI and the MCP server (through
``schedagent.client``), and the daemon socket. ``call`` validates a JSON object against
the operation's pydantic model (the socket's clients are untrusted, so validation
happens here and not only in a schema), runs the handler over the service layer,
audits privileged operations and returns a JSON-ready dict whose size is bounded.
Errors come back as ``SchedagentError`` (``OpError`` for bad arguments) carrying a
message that names the valid choices.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from pydantic import ValidationError

from schedagent import opspec, services
from schedagent.agent.llm import Budget
from schedagent.agent.tune import TuneRequest
from schedagent.bench import workload as bench_workload
from schedagent.bench.runner import EEVDF, Arm
from schedagent.errors import Cancelled, ConfigError, SchedagentError, StoreUnavailable
from schedagent.execution import engine
from schedagent.kernel import bccprobes, cgroupfs, partial, procstat, runqueue, scx
from schedagent.models import KNOB_HELP, DeepReport, ModelBudget, Target, TuneBudget
from schedagent.opspec import (
    Args,
    BenchArgs,
    HistoryArgs,
    HoldArgs,
    KnobArgs,
    LoadArgs,
    NameArgs,
    NoArgs,
    OptionalTargetArgs,
    ProfileArgs,
    RunArgs,
    SuiteArgs,
    TargetArgs,
    TuneArgs,
    VerifyArgs,
    VerifyPathArgs,
    WindowArgs,
)
from schedagent.policy import repo

log = logging.getLogger(__name__)

#: No single string in a result is longer than this (policy sources, verifier logs).
MAX_TEXT = 16_000
#: No list in a result has more items than this.
MAX_ITEMS = 200

#: steps of a long operation: (what, done, total)
Progress = Callable[[str, int, int], None]


class OpError(ConfigError):
    """An operation was called with arguments it cannot accept."""


#: The uid of the peer a request came from. The daemon socket sets it per connection
#: (SO_PEERCRED); None means an in-process caller with this process's rights (CLI, MCP
#: run as root). A context variable, so the socket's handler signature stays the same.
CALLER_UID: ContextVar[int | None] = ContextVar("schedagent_caller_uid", default=None)
#: set by the daemon's socket for one request: whether its client has hung up. A long
#: operation then stops at its next progress step (``Cancelled``), and cleans up as on
#: any other exit.
HUNG_UP: ContextVar[Callable[[], bool] | None] = ContextVar("schedagent_hung_up", default=None)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who runs an operation, and where its in-process caller wants to hear progress."""

    actor: str
    #: steps of a long operation (bench, tune, prebuild); in-process callers only
    progress: Progress | None = None
    #: one-line notices while an operation runs (a policy attached); in-process only
    notify: Callable[[str], None] | None = None


def _quiet(_what: str, _done: int, _total: int) -> None:
    return None


def _cancellable(op: str, hung_up: Callable[[], bool], inner: Progress) -> Progress:
    """``inner``, raising ``Cancelled`` at the first step after the client hung up."""

    def step(what: str, done: int, total: int) -> None:
        if hung_up():
            raise Cancelled(op)
        inner(what, done, total)

    return step


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


# --- arguments the models cannot check alone (they need the system) ----------------------


def check_target(a: TargetArgs | OptionalTargetArgs, *, canary: bool = False) -> Target | None:
    """The checked target: a pid the caller may act on, or a confined cgroup path."""
    if a.pid is not None:
        partial.check_pid(a.pid, CALLER_UID.get(), canary=canary)
        return Target(pid=a.pid)
    if a.cgroup is not None:
        return Target(cgroup=cgroupfs.normalize(a.cgroup))
    return None


def _target(a: TargetArgs, *, canary: bool = False) -> Target:
    target = check_target(a, canary=canary)
    assert target is not None  # TargetArgs requires exactly one of pid or cgroup
    return target


def _policy_name(name: str) -> str:
    known = repo.builtin_names()
    if name not in known:
        raise OpError(f"unknown policy {name!r}; valid choices: {', '.join(known)}")
    return name


def _loadable(ref: str, tunables: dict[str, int]) -> tuple[str, dict[str, int]]:
    """(spec, tunables) for a repository policy name, or a verified artifact's."""
    if ref in repo.builtin_names():
        return ref, tunables
    art = services.verified_artifact(ref, tunables)
    return art.spec, art.tunables


def _arm(ref: str, tunables: dict[str, int]) -> Arm:
    if ref == EEVDF:
        if tunables:
            raise OpError("eevdf has no tunables; drop them or name a policy")
        return Arm(None)
    return Arm(*_loadable(ref, tunables))


def _workload(name: str) -> str:
    names = [w.name for w in bench_workload.all_workloads()]
    if name not in names:
        raise OpError(f"unknown workload {name!r}; valid choices: {', '.join(names)}")
    return name


# --- handlers ----------------------------------------------------------------------------


def _system_snapshot(_: NoArgs, __: Caller) -> dict[str, Any]:
    sysnow = procstat.read_system()
    st = services.status(events=5)
    return {
        "sched_ext": asdict(st.sched_ext),
        "active": st.active,
        "owner_alive": st.owner_alive,
        "topology": asdict(procstat.read_topology()),
        "loadavg_1m": sysnow.loadavg_1m,
        "procs_running": sysnow.procs_running,
        "psi_total_us": {
            "cpu": sysnow.psi_cpu_some_us,
            "memory": sysnow.psi_mem_some_us,
            "io": sysnow.psi_io_some_us,
        },
        "bcc": bccprobes.bcc_available(),
        "root": os.geteuid() == 0,
        "quarantine": st.quarantine,
        "recent_events": st.events,
    }


def _doctor(_: NoArgs, __: Caller) -> dict[str, Any]:
    report = services.doctor()
    return {
        "kernel": report.kernel,
        "in_testbed": report.in_testbed,
        "sched_ext_ready": report.sched_ext_ready,
        "checks": {c.name: {"ok": c.ok, "detail": c.detail, "fix": c.fix} for c in report.checks},
    }


def _deep(rep: DeepReport) -> dict[str, Any]:
    """The bcc report without its 256 raw slots, with the percentiles they give."""
    out = asdict(rep)
    del out["wakeup_fine"]
    out["wakeup_latency_us"] = {
        f"p{q}": round(rep.wakeup_fine.percentile(q), 1) for q in (50, 90, 99)
    }
    out["overhead_pct_of_one_cpu"] = round(rep.overhead_pct_of_one_cpu, 3)
    return out


def _profile(a: ProfileArgs, _: Caller) -> dict[str, Any]:
    target = _target(a)
    out = services.profile_workload(target, a.duration_s, a.slo).to_json()
    if a.deep:
        try:
            out["deep"] = _deep(services.deep_probe(target, a.duration_s))
        except SchedagentError as err:  # say so clearly, keep the cheap profile
            out["deep"] = {"error": str(err)}
    return out


def _runqueue_latency(a: WindowArgs, _: Caller) -> dict[str, Any]:
    target = _target(a)
    seen = runqueue.observe_histograms(target, a.duration_s)
    if seen is not None:
        return {
            "source": "observer: BPF on sched_wakeup, sched_switch, sched_migrate_task",
            "wakeups": seen.wakeups,
            "wakeup_latency_us": {
                f"p{q}": round(seen.woken.percentile(q), 1) for q in (50, 90, 99)
            },
            "preempted_wait_us": {
                f"p{q}": round(seen.preempted.percentile(q), 1) for q in (50, 90, 99)
            },
            "waits": {"woken": seen.woken.total, "preempted": seen.preempted.total},
            "mean_wait_us": round(seen.totals.mean_wait_us, 1),
            "timeslices": seen.totals.slices,
            "migrations": seen.migrations,
            "duration_s": round(seen.totals.duration_s, 3),
            "observer_overhead_pct_of_one_cpu": round(seen.observer_cpu_pct, 3),
        }
    if not bccprobes.bcc_available():
        waits = runqueue.observe_waits(target, a.duration_s)
        return {
            "source": "schedstat (neither the observer nor bcc is available, so no "
            "histogram; run as root on a kernel with BTF for percentiles)",
            "mean_wait_us": waits.mean_wait_us,
            "timeslices": waits.slices,
            "duration_s": waits.duration_s,
        }
    rep = services.deep_probe(target, a.duration_s)
    return {
        "source": "bcc: " + ", ".join(rep.attach_points),
        "wakeups": rep.wakeups,
        "wakeup_latency_us": {
            f"p{q}": round(rep.wakeup_fine.percentile(q), 1) for q in (50, 90, 99)
        },
        "histogram_log2_us": rep.wakeup_latency.buckets,
        "migrations": rep.migrations,
        "duration_s": rep.duration_s,
        "probe_overhead_pct_of_one_cpu": round(rep.overhead_pct_of_one_cpu, 3),
    }


def _list_policies(_: NoArgs, __: Caller) -> dict[str, Any]:
    return {"policies": services.list_policies()}


def _show_policy(a: NameArgs, _: Caller) -> dict[str, Any]:
    detail = services.show_policy(_policy_name(a.name))
    out = asdict(detail)
    out["source_text"] = repo.resolve(detail.name).source.read_text()
    return out


def _verified(spec: str, tunables: dict[str, int], actor: str) -> dict[str, Any]:
    art, res = services.verify_recorded(spec, tunables, actor)
    return {
        "ok": True,
        **asdict(res),
        "artifact_id": art.artifact_id,
        "policy": art.policy,
        "passed": res.gates,
        "next": f"load_policy(policy={art.artifact_id!r}, pid=..., duration_s=...)",
    }


def _verify(a: VerifyArgs, c: Caller) -> dict[str, Any]:
    spec = _policy_name(a.name) if a.name else services.stage_source(a.source or "")
    return _verified(spec, a.tunables, c.actor)


def _verify_path(a: VerifyPathArgs, c: Caller) -> dict[str, Any]:
    return _verified(a.policy, a.tunables, c.actor)


def _outcome(outcome: engine.RunOutcome) -> dict[str, Any]:
    """A run's outcome with what the guard saw, in the kernel's words."""
    data: dict[str, Any] = asdict(outcome)
    data["ok"] = outcome.ok
    event = outcome.guard_event
    if event is not None:
        data["guard"] = {
            "reason": event.reason(),
            "detection_latency_ms": event.detection_latency_ms,
        }
        if event.exit_info is not None:
            data["exit_kind"] = event.exit_info.kind
            data["exit_kind_name"] = event.exit_info.kind_name
            data["kernel_message"] = event.exit_info.message or event.exit_info.reason
    return data


def _attached_notice(c: Caller, duration_s: float | None) -> Callable[[engine.RunOutcome], None]:
    def attached(outcome: engine.RunOutcome) -> None:
        if c.notify is None:
            return
        scope = (
            f"partial, {outcome.switched_threads} threads of {outcome.target}"
            if outcome.switched_threads
            else f"all tasks, target {outcome.target}"
            if outcome.target
            else "all tasks"
        )
        until = f"for {duration_s:g} s" if duration_s else "until interrupted"
        c.notify(
            f"{outcome.ops_name} enabled (enable_seq {outcome.enable_seq}, {scope}); "
            f"guard on {until}" + (f"; {outcome.confined}" if outcome.confined else "")
        )

    return attached


def _load(a: LoadArgs, c: Caller) -> dict[str, Any]:
    target = _target(a, canary=True)  # a refused target costs nothing further
    art = services.verified_artifact(a.policy, a.tunables)
    seen: list[str | None] = []
    req = engine.RunRequest(art.spec, art.tunables, target, duration_s=a.duration_s, actor=c.actor)

    def attached(outcome: engine.RunOutcome) -> None:
        seen.append(scx.read_state().ops)
        _attached_notice(c, a.duration_s)(outcome)

    outcome = services.run_policy(req, attached)
    return {
        "artifact_id": art.artifact_id,
        "policy": art.policy,
        "mode": "partial (canary)",
        "ops_while_attached": seen[0] if seen else None,
        "outcome": _outcome(outcome),
        "sched_ext_after": asdict(scx.read_state()),
    }


def _list_interventions(_: NoArgs, __: Caller) -> dict[str, Any]:
    return {
        "interventions": services.interventions_now(),
        "policies": repo.builtin_names(),
        "knob_syntax": KNOB_HELP,
    }


def _load_knob(a: KnobArgs, c: Caller) -> dict[str, Any]:
    target = _target(a, canary=True)  # never init's tree, schedagent or a kernel thread

    def applied(threads: int) -> None:
        if c.notify is not None:
            c.notify(f"{a.knob} on {threads} threads of {target.describe()} for {a.duration_s:g} s")

    return services.hold_knob(
        a.knob,
        target,
        a.duration_s,
        c.actor,
        CALLER_UID.get(),
        on_applied=applied,
        cancelled=HUNG_UP.get(),
    )


def _hold(a: HoldArgs, c: Caller) -> dict[str, Any]:
    target = check_target(a)
    art = services.verified_artifact(a.policy, a.tunables)
    req = engine.RunRequest(
        art.spec, art.tunables, target, a.duration_s, switch_all=True, actor=c.actor
    )
    return {
        "artifact_id": art.artifact_id,
        **_outcome(services.run_policy(req, _attached_notice(c, a.duration_s))),
    }


def _run(a: RunArgs, c: Caller) -> dict[str, Any]:
    target = check_target(a, canary=not a.switch_all)
    req = engine.RunRequest(
        a.policy,
        a.tunables,
        target,
        a.duration_s,
        a.timeout_ms,
        actor=c.actor,
        switch_all=a.switch_all,
    )
    return _outcome(services.run_policy(req, _attached_notice(c, a.duration_s)))


def _prebuild(_: NoArgs, c: Caller) -> dict[str, Any]:
    return asdict(services.prebuild(c.notify))


def _unquarantine(a: NameArgs, _: Caller) -> dict[str, Any]:
    return {"policy": a.name, "removed": services.unquarantine(a.name)}


def _list_workloads(_: NoArgs, __: Caller) -> dict[str, Any]:
    return {"workloads": services.bench_workloads()}


def _bench_out(run: services.BenchRun) -> dict[str, Any]:
    return {
        "results": [r.to_json() for r in run.results],
        "table": run.table,
        "record": str(run.record),
        "markdown": str(run.markdown),
        "plots": {w: str(p) for w, p in run.plots.items()},
        "written": run.written,
    }


def _benchmark(a: BenchArgs, c: Caller) -> dict[str, Any]:
    workload = _workload(a.workload)
    names = a.policies or ([] if a.knobs else [EEVDF])
    arms = [_arm(p, a.tunables) for p in names] + [Arm.of_knob(k) for k in a.knobs]
    run = services.run_benchmark(
        workload,
        arms,
        a.runs,
        baseline=_arm(a.baseline, {}),
        quick=a.quick,
        levels=a.levels or None,
        seed=a.seed,
        progress=c.progress or _quiet,
    )
    return _bench_out(run)


def _bench_suite(a: SuiteArgs, c: Caller) -> dict[str, Any]:
    for name in a.policies or []:
        _policy_name(name)
    for name in a.workloads or []:
        _workload(name)
    run = services.run_suite(
        a.policies,
        a.workloads,
        a.runs,
        quick=a.quick,
        seed=a.seed,
        progress=c.progress or _quiet,
        knob_arms=a.knobs,
    )
    return _bench_out(run)


def _tune(a: TuneArgs, c: Caller) -> dict[str, Any]:
    if a.latency_log is not None and CALLER_UID.get() not in (None, 0):
        raise OpError(
            "latency_log names a file the daemon would read with its own rights; "
            "configure it in the daemon's targets, or run tune as root"
        )
    target = _target(a)
    budget = TuneBudget.model_validate(a.model_dump(include=set(TuneBudget.model_fields)))
    model = ModelBudget.model_validate(a.model_dump(include=set(ModelBudget.model_fields)))
    for pid in a.others:  # the competing work tune may move to SCHED_BATCH/IDLE
        partial.check_pid(pid, CALLER_UID.get(), canary=True)
    req = TuneRequest(
        target,
        a.agent,
        budget=budget,
        dry_run=a.dry_run,
        model=a.model,
        latency_log=a.latency_log,
        others=tuple(a.others),
        caller_uid=CALLER_UID.get(),
    )
    report = services.tune(
        req, a.slo, c.progress, Budget(model.max_tool_calls, model.max_tokens, model.max_usd)
    )
    return report.to_json()


def _status(_: NoArgs, __: Caller) -> dict[str, Any]:
    return asdict(services.status(events=20))


def _rollback(_: NoArgs, __: Caller) -> dict[str, Any]:
    return asdict(services.rollback())


def _history(a: HistoryArgs, _: Caller) -> dict[str, Any]:
    store = services.open_store()
    try:
        props = store.proposals()
        older_pending = [p for p in props[: -a.limit] if p["status"] == "pending"]
        return {
            "events": store.events(a.limit),
            "audit": store.audit_records(a.limit),
            "proposals": older_pending + props[-a.limit :],
        }
    finally:
        store.close()


Handler = Callable[[Any, Caller], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Op:
    """An operation's declaration and the function that runs it."""

    spec: opspec.OpSpec
    handler: Handler


_HANDLERS: dict[str, Handler] = {
    "system_snapshot": _system_snapshot,
    "doctor": _doctor,
    "profile_workload": _profile,
    "runqueue_latency": _runqueue_latency,
    "list_policies": _list_policies,
    "show_policy": _show_policy,
    "verify_policy": _verify,
    "verify_path": _verify_path,
    "load_policy": _load,
    "list_interventions": _list_interventions,
    "load_knob": _load_knob,
    "hold_policy": _hold,
    "run_policy": _run,
    "prebuild": _prebuild,
    "unquarantine": _unquarantine,
    "list_workloads": _list_workloads,
    "benchmark": _benchmark,
    "bench_suite": _bench_suite,
    "tune": _tune,
    "status": _status,
    "rollback": _rollback,
    "history": _history,
}

#: name -> operation, for every operation this process can run (the daemon runs its own
#: ``where="daemon"`` operations itself, before it falls through to this table)
OPS: dict[str, Op] = {name: Op(opspec.SPECS[name], handler) for name, handler in _HANDLERS.items()}

PRIVILEGED = opspec.PRIVILEGED


def validate(name: str, args: object) -> Args:
    """The argument model for an operation, or an OpError naming what is wrong."""
    spec = opspec.SPECS.get(name)
    if spec is None:
        raise OpError(
            f"unknown operation {name!r}; valid choices: {', '.join(sorted(opspec.SPECS))}"
        )
    if not isinstance(args, dict):
        raise OpError(f"{name}: arguments must be a JSON object, got {type(args).__name__}")
    try:
        return spec.args.model_validate(args)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in err.errors()
        )
        fields = ", ".join(spec.args.model_fields) or "none"
        raise OpError(f"{name}: {problems} (accepted arguments: {fields})") from err


def call(
    name: str,
    args: object,
    actor: str,
    *,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Validate and run one operation; audit it; return a bounded, JSON-ready result."""
    parsed = validate(name, args)
    spec = opspec.SPECS[name]
    if spec.where == "daemon":
        raise OpError(
            f"{name} is the running daemon's operation; start the daemon "
            "(systemctl start schedagent) and ask it through its socket"
        )
    if spec.where == "local" and CALLER_UID.get() is not None:
        raise OpError(
            f"{name} runs only in the caller's own process (it names files on "
            "the caller's machine or runs until the caller interrupts it); run "
            "`schedagent` itself as root"
        )
    started = time.monotonic()
    hung_up = HUNG_UP.get()
    if hung_up is not None:
        progress = _cancellable(name, hung_up, progress or _quiet)
    result = OPS[name].handler(parsed, Caller(actor, progress, notify))
    out: dict[str, Any] = bounded(result)
    json.dumps(out)  # a result that is not JSON-ready is a bug here, not in the client
    if spec.privileged:
        try:
            services.audit(
                actor,
                name,
                parsed.model_dump(exclude={"source"}),
                {"ok": True, "wall_s": round(time.monotonic() - started, 2)},
            )
        except (StoreUnavailable, sqlite3.Error) as err:
            # done already: a lost audit line is no failure (rollback must work without
            # the store at all)
            log.warning("%s done, but not audited: the store failed (%s)", name, err)
    return out


__all__ = [
    "CALLER_UID",
    "OPS",
    "PRIVILEGED",
    "Caller",
    "Op",
    "OpError",
    "ProfileArgs",
    "SchedagentError",
    "bounded",
    "call",
    "check_target",
    "validate",
]
