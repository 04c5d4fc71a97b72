"""Operations shared by every front end: the CLI, the daemon socket and MCP.

A behaviour that exists in only one front end is a bug, so the front ends call
these functions and only adapt arguments and output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from schedagent import config
from schedagent.agent import llm
from schedagent.agent import tune as tune_mod
from schedagent.agent.report import TuneReport
from schedagent.bench import service as bench_service
from schedagent.config import cache_dir
from schedagent.errors import GuardrailViolation, SchedagentError, StoreUnavailable
from schedagent.execution import engine, interventions
from schedagent.execution import measure as live
from schedagent.execution.port import LiveExecutor
from schedagent.kernel import (
    bccprobes,
    capabilities,
    emergency,
    partial,
    procstat,
    scx,
    toolchain,
)
from schedagent.kernel.capabilities import Check
from schedagent.models import DeepReport, Target, VerifyResult, WorkloadProfile, parse_slo
from schedagent.policy import gate, repo
from schedagent.store import (
    ActiveRecord,
    Event,
    QuarantineEntry,
    Store,
    VerifiedArtifact,
    pid_alive,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """What this machine can do."""

    in_testbed: bool
    kernel: str
    checks: list[Check]

    @property
    def sched_ext_ready(self) -> bool:
        """Whether schedulers can be loaded here right now."""
        needed = {"sched_ext", "btf", "clang", "bpftool", "libbpf", "root"}
        return all(c.ok for c in self.checks if c.name in needed)


def doctor() -> DoctorReport:
    """Check sched_ext, BTF, the toolchain, bcc, root, KVM and the testbed image."""
    checks = capabilities.all_checks()
    in_testbed = os.environ.get("SCHEDAGENT_IN_TESTBED") == "1"
    if not in_testbed:  # KVM and the image only matter on the host that boots the testbed
        checks.append(_check_kvm())
        checks.append(_check_testbed())
    return DoctorReport(in_testbed, os.uname().release, checks)


def _check_kvm() -> Check:
    if not os.path.exists("/dev/kvm"):
        return Check(
            "kvm",
            False,
            "/dev/kvm does not exist; the testbed uses TCG emulation",
            "enable virtualisation in firmware/hypervisor for faster testbed boots",
        )
    try:
        probe = json.loads((cache_dir() / "kvm-probe.json").read_text())
    except (OSError, ValueError):
        return Check(
            "kvm",
            True,
            "/dev/kvm exists, not probed yet (the first `schedagent sandbox run` probes it)",
        )
    if probe.get("kvm"):
        return Check("kvm", True, "probe boot succeeded with KVM")
    return Check(
        "kvm",
        False,
        "/dev/kvm exists but a probe boot failed; the testbed falls back to TCG emulation",
        "nothing to do (boots are just slower)",
    )


def _check_testbed() -> Check:
    from schedagent.sandbox.image import find_image, image_key

    img = find_image()
    if img is None:
        return Check(
            "testbed", False, f"no image for key {image_key()}", "schedagent sandbox build"
        )
    return Check("testbed", True, f"image {img.key} with kernel {img.kernel_release} at {img.root}")


# --- engine operations ---------------------------------------------------------------


def open_store() -> Store:
    """The persistent store at the configured location."""
    return Store()


def run_policy(
    req: engine.RunRequest, on_attached: Callable[[engine.RunOutcome], None] | None = None
) -> engine.RunOutcome:
    """Attach a policy with the guard on; always restores the previous state."""
    store = open_store()
    try:
        outcome = engine.run_policy(req, store, on_attached)
        store.audit(
            req.actor,
            "load",
            {"policy": req.spec, "tunables": req.overrides, "target": outcome.target},
            {"reason": outcome.reason, "final_state": outcome.final_state},
        )
        return outcome
    finally:
        store.close()


def hold_knob(
    spec: str,
    target: Target,
    duration_s: float,
    actor: str,
    caller_uid: int | None = None,
    on_applied: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> dict[str, object]:
    """Hold an EEVDF knob on the target's threads for ``duration_s`` (threads it starts
    meanwhile get it too), journaled, then put every thread back; audited. It ends
    early when the knob stops holding, when ``cancelled`` says so (the client hung up),
    or when this process is asked to release what it holds (the daemon's rollback)."""
    store = open_store()
    problem: str | None = None
    ended = "duration"
    try:
        with (
            interventions.knob_session(spec, store, target, caller_uid) as held,
            engine.releasable(held.knob.label) as stop,
        ):
            if on_applied is not None:
                on_applied(len(held.applied))
            deadline = time.monotonic() + duration_s
            while (left := deadline - time.monotonic()) > 0:
                if stop.wait(min(0.25, left)):
                    ended = "released"
                    break
                if cancelled is not None and cancelled():
                    ended = "cancelled"
                    break
                problem = held.problem()
                if problem is not None:
                    ended = "problem"
                    break
            threads = len(held.applied)
        result: dict[str, object] = {
            "knob": held.knob.label,
            "target": target.describe(),
            "threads": threads,
            "restored": held.restored,
            "not_restored": {str(t): why for t, why in held.unrestored.items()},
            "ended": ended,
            "problem": problem,
        }
        store.audit(
            actor, "load_knob", {"knob": held.knob.label, "target": target.describe()}, result
        )
        return result
    finally:
        store.close()


def interventions_now() -> list[dict[str, object]]:
    """``list_interventions``: every kind, least intrusive first, with whether this host
    allows it now (a knob's own check; a policy needs sched_ext)."""
    out = []
    snap = scx.read_state()
    for item in interventions.catalogue():
        kind, example = str(item["kind"]), str(item["example"])
        why_not: str | None = None
        if kind in ("partial", "policy"):
            if not snap.present:
                why_not = "this kernel has no sched_ext (see `schedagent doctor`)"
        else:
            try:
                interventions.check_knob(example)
            except SchedagentError as err:
                why_not = str(err)
        out.append({**item, "allowed": why_not is None, "why_not": why_not})
    return out


@dataclass(frozen=True, slots=True)
class StatusReport:
    """sched_ext state, what schedagent has loaded, quarantine and recent events."""

    sched_ext: scx.ScxState
    active: ActiveRecord | None
    owner_alive: bool
    quarantine: list[QuarantineEntry]
    events: list[Event]


def status(events: int = 10) -> StatusReport:
    """Current state, for ``schedagent status``."""
    store = open_store()
    try:
        rec = store.active()
        return StatusReport(
            scx.read_state(),
            rec,
            rec is not None and pid_alive(rec.owner_pid),
            store.quarantine_list(),
            store.events(events),
        )
    finally:
        store.close()


def audit(actor: str, action: str, args: dict[str, object], result: dict[str, object]) -> None:
    """Record who asked for what, and the result."""
    store = open_store()
    try:
        store.audit(actor, action, args, result)
    finally:
        store.close()


def rollback() -> engine.ExternalRollback:
    """Return to EEVDF, whichever process holds the link.

    The emergency path must not depend on the database: when the store is missing,
    corrupted or read-only, the struct_ops link's holder is found from /proc instead
    (then SIGKILL, then sysrq-S), and the result says so in ``note``.
    """
    try:
        store = open_store()
    except StoreUnavailable as err:
        return _rollback_without_store(err.reason)
    try:
        try:
            result = engine.rollback_active(store)
        except sqlite3.Error as err:  # corruption found on the first read
            log.warning("rollback: the store failed (%s); using the kernel's view", err)
            return _rollback_without_store(str(err))
        try:
            store.audit(
                "cli", "rollback", {}, {"action": result.action, "state_after": result.state_after}
            )
        except sqlite3.Error as err:  # rolled back already: a lost audit line is no failure
            log.warning("rollback done, but not audited: the store failed (%s)", err)
        return result
    finally:
        store.close()


def _rollback_without_store(why: str) -> engine.ExternalRollback:
    done = emergency.release_without_store(why)
    return engine.ExternalRollback(
        done.action, done.state_before, done.state_after, done.ops_before, done.note
    )


def unquarantine(policy: str) -> int:
    """Remove a policy from quarantine."""
    store = open_store()
    try:
        return store.unquarantine(policy)
    finally:
        store.close()


# --- verified artifacts: what the MCP server and the daemon's clients may load ------------


def stage_source(source: str) -> str:
    """Write untrusted scheduler source under the state directory; return its path.

    The path is keyed by the source's hash, so the same text always lands in the same
    place and a later edit cannot pass for what was verified.
    """
    data = source.encode()
    if len(data) > gate.MAX_SOURCE_BYTES:
        raise GuardrailViolation(
            f"the source is {len(data)} bytes; the limit is {gate.MAX_SOURCE_BYTES}. Send a "
            "smaller scheduler, or start from a repository policy by name"
        )
    digest = hashlib.sha256(data).hexdigest()[:16]
    staged = config.state_dir() / "staged"
    directory = staged / digest
    path = directory / f"src_{digest}.bpf.c"
    if not path.exists():
        _evict_staged(staged, len(data))
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return str(path)


#: Staged sources kept at most (count and bytes); the oldest go first (issue 12).
MAX_STAGED_SOURCES = 64
MAX_STAGED_BYTES = 4 << 20


def _evict_staged(staged: Path, incoming: int) -> None:
    """Make room for one more source of ``incoming`` bytes by removing the oldest."""
    entries: list[tuple[float, Path, int]] = []
    for directory in staged.glob("*"):
        files = [f for f in directory.glob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        mtime = max((f.stat().st_mtime for f in files), default=directory.stat().st_mtime)
        entries.append((mtime, directory, size))
    entries.sort()
    total = sum(e[2] for e in entries)
    while entries and (
        len(entries) + 1 > MAX_STAGED_SOURCES or total + incoming > MAX_STAGED_BYTES
    ):
        _mtime, directory, size = entries.pop(0)
        shutil.rmtree(directory, ignore_errors=True)
        total -= size
        log.info("evicted staged source %s (%d bytes)", directory.name, size)


def verify_artifact(spec: str, overrides: dict[str, int], actor: str) -> VerifiedArtifact:
    """The gates up to the kernel verifier; a pass is recorded as a loadable artifact."""
    return verify_recorded(spec, overrides, actor)[0]


def verify_recorded(
    spec: str, overrides: dict[str, int], actor: str
) -> tuple[VerifiedArtifact, VerifyResult]:
    """``verify_artifact``, with what each gate found (ops name, object, tunables)."""
    store = open_store()
    try:
        res = engine.verify(spec, overrides, store)
        kernel = toolchain.kernel_build_id()
        art = VerifiedArtifact(
            VerifiedArtifact.make_id(res.source_hash, kernel, res.tunables),
            res.policy,
            spec,
            res.source_hash,
            kernel,
            res.tunables,
            time.time(),
        )
        store.add_verified(art)
        store.audit(
            actor,
            "verify",
            {"policy": spec, "tunables": overrides},
            {"artifact_id": art.artifact_id, "gates": res.gates},
        )
        return art, res
    finally:
        store.close()


def verified_artifact(ref: str, overrides: dict[str, int]) -> VerifiedArtifact:
    """The verified artifact a load refers to, by id or by policy name and tunables.

    Refuses anything that did not pass verification on this kernel, and anything whose
    source changed since it did.
    """
    store = open_store()
    try:
        art = store.verified(ref)
        kernel = toolchain.kernel_build_id()
        if art is None and "/" not in ref:
            try:
                policy = repo.resolve(ref)
            except SchedagentError:
                policy = None
            if policy is not None:
                tunables = policy.resolve_tunables(overrides)
                art = store.verified(
                    VerifiedArtifact.make_id(policy.source_hash(), kernel, tunables)
                )
        if art is None:
            raise GuardrailViolation(
                f"{ref!r} has not passed verification with these tunables on this kernel; "
                "call verify_policy first and load what it returns (its artifact_id)"
            )
        if overrides and art.tunables != repo.resolve(art.spec).resolve_tunables(overrides):
            raise GuardrailViolation(
                f"artifact {art.artifact_id} was verified with tunables {art.tunables}; "
                f"verify {overrides} first"
            )
        now = repo.resolve(art.spec).source_hash()
        if now != art.source_hash or art.kernel != kernel:
            raise GuardrailViolation(
                f"artifact {art.artifact_id} ({art.policy}) changed since it was verified "
                f"(source or kernel differs); verify it again"
            )
        return art
    finally:
        store.close()


# --- policy repository ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicySummary:
    """One line of ``policies list``."""

    name: str
    summary: str
    good_for: list[str]
    status: str
    history: dict[str, dict[str, int]]


def list_policies() -> list[PolicySummary]:
    """Every built-in policy with its win/loss history by workload class."""
    store = open_store()
    try:
        out = []
        for name in repo.builtin_names():
            meta = repo.resolve(name).meta
            assert meta is not None  # builtin policies always have policy.yaml
            out.append(
                PolicySummary(
                    name,
                    meta.summary,
                    list(meta.good_for),
                    meta.status,
                    store.verdict_summary(name),
                )
            )
        return out
    finally:
        store.close()


@dataclass(frozen=True, slots=True)
class PolicyDetail:
    """Metadata of one policy, plus live counters when it is the active one."""

    name: str
    meta: dict[str, object]
    source: str
    active: bool
    live_stats: dict[str, int]
    stats_age_s: float | None
    history: dict[str, dict[str, int]]


def show_policy(name: str) -> PolicyDetail:
    """``policies show``: the YAML, the source path, live stats when active."""
    policy = repo.resolve(name)
    store = open_store()
    try:
        rec = store.active()
        active = rec is not None and rec.policy == policy.name and pid_alive(rec.owner_pid)
        live: dict[str, int] = {}
        age = None
        if active:
            values, ts = store.active_stats()
            labels = policy.meta.stats if policy.meta else []
            live = {
                labels[i] if i < len(labels) else f"stat{i}": v
                for i, v in enumerate(values)
                if i < max(len(labels), 1) or v
            }
            age = round(time.time() - ts, 1) if ts else None
        meta = policy.meta.model_dump(mode="json") if policy.meta else {}
        return PolicyDetail(
            policy.name,
            meta,
            str(policy.source),
            active,
            live,
            age,
            store.verdict_summary(policy.name),
        )
    finally:
        store.close()


# --- workload analysis ------------------------------------------------------------------


def deep_probe(target: Target, duration_s: float) -> DeepReport:
    """bcc histograms of wakeup latency and burst length for a target."""
    return bccprobes.run_deep(target, duration_s)


def profile_workload(
    target: Target, duration_s: float, explicit_slo: str | None = None
) -> WorkloadProfile:
    """Observe a target for ``duration_s`` and infer its class and SLO."""
    slo = parse_slo(explicit_slo) if explicit_slo else None
    return live.profile(target, duration_s, slo)


# --- benchmarks: schedagent/bench/service.py, named here for every front end ------------

bench_workloads = bench_service.bench_workloads
bench_compare = bench_service.bench_compare
bench_suite = bench_service.bench_suite
BenchRun = bench_service.BenchRun
record_bench = bench_service.record_bench
run_benchmark = bench_service.run_benchmark
run_suite = bench_service.run_suite


# --- tuning -----------------------------------------------------------------------------


def tune(
    req: tune_mod.TuneRequest,
    slo: str | None = None,
    progress: tune_mod.Progress | None = None,
    budget: llm.Budget | None = None,
) -> TuneReport:
    """Profile a target, try candidates live against EEVDF, keep only a proven winner."""
    if req.agent == "anthropic":
        return tune_with_agent(req, None, budget, slo, progress)[0]
    req = _checked(req, slo)
    store = open_store()
    try:
        with procstat.priority():  # windows and guard stay on time under any candidate
            return tune_mod.tune(req, store, LiveExecutor(store, req.caller_uid), progress)
    finally:
        store.close()


def _checked(req: tune_mod.TuneRequest, slo: str | None) -> tune_mod.TuneRequest:
    """The request with its explicit SLO, once everything that can fail before a tune
    starts has been checked: a malformed --slo, a missing access log, a missing pid or
    cgroup, a kernel without sched_ext."""
    if slo:
        req = replace(req, slo=parse_slo(slo))
    if req.latency_log is not None:
        live.check_latency_log(req.latency_log)
    partial.target_tids(req.target)
    engine.require_sched_ext()
    return req


def tune_with_agent(
    req: tune_mod.TuneRequest,
    transport: llm.Transport | None = None,
    budget: llm.Budget | None = None,
    slo: str | None = None,
    progress: tune_mod.Progress | None = None,
) -> tuple[TuneReport, dict[str, object]]:
    """``tune --agent anthropic``: Claude chooses through the same typed operations."""
    req = _checked(req, slo)
    transport = transport or llm.AnthropicTransport()
    store = open_store()
    try:
        with procstat.priority():  # windows and guard stay on time under any candidate
            return llm.tune_with_llm(
                req, store, LiveExecutor(store, req.caller_uid), transport, budget, progress
            )
    finally:
        store.close()


def prebuild(progress: Callable[[str], None] | None = None) -> toolchain.PrebuildReport:
    """Prepare vmlinux.h and every built-in policy's object for this kernel, ahead of need."""
    sources = [repo.resolve(name).source for name in repo.builtin_names()]
    return toolchain.prebuild(sources, progress)
