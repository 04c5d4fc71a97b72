"""The execution engine: gates, build, load, guard, rollback and the record.

This is the only place that strings the privileged steps together. Every
candidate passes the gates in order, cheapest first: the static gate, clang,
the object check (the security boundary), then the kernel verifier (load
without attach). Only then may it attach, with
the guard on, and every exit path detaches, restores partial-mode threads and
writes the outcome to the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from schedagent.errors import (
    FeatureMissing,
    HostControlsUnsupported,
    KernelError,
    Quarantined,
    SchedExtBusy,
    SchedulerExited,
    SchedulerLoadError,
)
from schedagent.execution import hostcontrols
from schedagent.kernel import btf as kbtf
from schedagent.kernel import cgroupfs, emergency, knobs, partial, scx, toolchain, topology
from schedagent.kernel.guard import Guard, GuardEvent, GuardEventKind, RollbackReport, rollback
from schedagent.kernel.kmsg import KmsgReader
from schedagent.kernel.loader import AttachedScheduler, BpfObject, LoadOptions, attach
from schedagent.models import Target, VerifyResult
from schedagent.policy import gate, objcheck
from schedagent.policy.repo import PolicySource, resolve
from schedagent.store import ActiveRecord, Store, pid_alive

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunOutcome:
    """How a guarded run of a policy ended."""

    policy: str
    ops_name: str
    tunables: dict[str, int]
    target: str | None
    enable_seq: int
    reason: str = "duration"
    guard_event: GuardEvent | None = None
    rollback: RollbackReport = field(default_factory=RollbackReport)
    stats: list[int] = field(default_factory=list)
    switched_threads: int = 0
    restored_threads: int = 0
    ran_s: float = 0.0
    final_state: str = "unknown"
    #: why a whole-system request ran in partial mode on its target instead (the host's
    #: cgroup controls the policy does not honour, issue 17); empty when it was not confined
    confined: str = ""

    @property
    def ok(self) -> bool:
        """True when the run ended by duration, by the user or by a rollback, not by the kernel."""
        return (
            self.reason in ("duration", "interrupted", "released") and self.final_state != "enabled"
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A policy through the gates, its object opened with the tunables written."""

    policy: PolicySource
    report: gate.GateReport
    built: toolchain.BuiltObject
    obj: BpfObject
    tunables: dict[str, int]
    #: the sched_ext_ops members the object sets (what it implements)
    ops_members: tuple[str, ...]


def _prepare(spec: str, overrides: dict[str, int], store: Store | None) -> Prepared:
    policy = resolve(spec)
    tunables = policy.resolve_tunables(overrides)
    _check_requires(policy)
    text = policy.source.read_text(errors="replace")
    report = gate.check_source(text, str(policy.source))
    if store is not None:
        entry = store.quarantined(policy.name, policy.source_hash(), toolchain.kernel_build_id())
        if entry is not None:
            raise Quarantined(policy.name, entry.reason)
    built = toolchain.compile_source(policy.source)
    # the security boundary: what clang produced, not what the text looked like
    checked = objcheck.check_object(
        built.path, str(policy.source), objcheck.KernelView.from_index(kbtf.load())
    )
    obj = BpfObject(built.path, policy.name)
    try:
        obj.set_rodata(tunables)
    except BaseException:
        obj.close()
        raise
    return Prepared(policy, report, built, obj, tunables, checked.ops_members)


def _check_requires(policy: PolicySource) -> None:
    """Every kfunc or constant the policy's YAML requires must be in this kernel's BTF."""
    if policy.meta is None or not policy.meta.requires:
        return
    index = kbtf.load()
    missing = [r for r in policy.meta.requires if not index.has_func(r) and r not in index.enums]
    if missing:
        raise FeatureMissing(
            f"{policy.name}'s requirements",
            f"{', '.join(missing)} not in this kernel's BTF",
            "use a newer kernel, or pick another policy",
        )


def _require_sched_ext() -> scx.ScxState:
    snap = scx.read_state()
    if not snap.present:
        raise FeatureMissing(
            "sched_ext",
            f"{scx.SCX_ROOT} does not exist on kernel {os.uname().release}",
            "use a kernel >= 6.12 with CONFIG_SCHED_CLASS_EXT=y, or run inside "
            "the testbed: schedagent sandbox run -- schedagent ...",
        )
    return snap


def has_sched_ext() -> bool:
    """Whether this kernel has sched_ext at all (no error when it does not)."""
    return scx.read_state().present


def require_sched_ext() -> scx.ScxState:
    """The sched_ext state, or a FeatureMissing error that says how to get sched_ext."""
    return _require_sched_ext()


def verify(spec: str, overrides: dict[str, int], store: Store | None = None) -> VerifyResult:
    """Run the gates up to the kernel verifier (load without attach)."""
    resolve(spec)  # an unknown name is reported before anything about the kernel
    _require_sched_ext()
    prep = _prepare(spec, overrides, store)
    policy = prep.policy
    try:
        prep.obj.load()
        rodata = prep.obj.rodata_names()
    finally:
        prep.obj.close()
    return VerifyResult(
        policy.name,
        prep.report.ops_name,
        str(policy.source),
        policy.source_hash(),
        str(prep.built.path),
        prep.built.cached,
        prep.tunables,
        rodata,
        ["static gate", "clang", "object check", "kernel verifier"],
    )


def recover(store: Store) -> str | None:
    """Clean up after a crashed owner: forget its record and restore its threads."""
    rec = store.active()
    leftovers = store.switched()
    note = None
    if rec is not None and not pid_alive(rec.owner_pid):
        snap = scx.read_state()
        note = (
            f"owner pid {rec.owner_pid} of {rec.policy} died; the kernel closed its link "
            f"(state now {snap.state})"
        )
        store.add_event("recovered", rec.policy, note=note, state=snap.state)
        store.clear_active()
    if leftovers and (rec is None or not pid_alive(rec.owner_pid)):
        restored = partial.restore([partial.SwitchedTask(*t) for t in leftovers])
        store.clear_switched()
        store.add_event("restored-threads", rec.policy if rec else None, restored=restored)
    recover_knobs(store)
    return note


def release_knob_holders(store: Store, timeout_s: float = 5.0) -> str | None:
    """End the EEVDF knobs other live processes hold (``schedagent knob``, a tune): each
    holder gets SIGTERM (it puts its threads back as it exits), then SIGKILL, and what a
    killed one left is put back from the journal. Says what it did, or None."""
    owners = {
        e.owner_pid
        for e in store.knob_journal()
        if e.owner_pid != os.getpid() and pid_alive(e.owner_pid)
    }
    if not owners:
        return None
    action = f"SIGTERM to {len(owners)} knob holder(s)"
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in owners:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(pid_alive(p) for p in owners):
            time.sleep(0.05)
        if not any(pid_alive(p) for p in owners):
            break
        action = f"SIGKILL to {len(owners)} knob holder(s)"
    recover_knobs(store)
    return action


def recover_knobs(store: Store) -> int:
    """Put back the threads a dead process left under an EEVDF knob (``knobs.recover``);
    returns how many were restored. Each owner's entries are cleared once handled."""
    done, restored = knobs.recover(list(store.knob_journal()), pid_alive)
    for owner, tids in done.items():
        store.clear_knobs(tids, owner)
        store.add_event("restored-knobs", None, owner_pid=owner, threads=len(tids))
    return restored


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What to run, for how long, on whom."""

    spec: str
    overrides: dict[str, int]
    target: Target | None = None
    duration_s: float | None = None
    timeout_ms: int | None = None
    actor: str = "cli"
    #: with a target: True runs every task on the policy (the target only fills its
    #: maps); False is the partial-mode canary where only the target moves
    switch_all: bool = False


#: sessions of this process that wait out a duration (``run_policy``), by their stop event:
#: ``release_in_process`` ends them (the daemon's rollback, when it runs them for clients)
_WAITING: dict[threading.Event, str] = {}
_WAITING_LOCK = threading.Lock()


def release_in_process(actor: str) -> list[str]:
    """End every policy this process holds for a duration, as their guard would; returns
    their names. The sessions detach and record on their own threads, as on any exit."""
    with _WAITING_LOCK:
        held = list(_WAITING.items())
    for stop, _name in held:
        log.info("releasing a held policy: rollback requested by %s", actor)
        stop.set()
    return [name for _stop, name in held]


@contextmanager
def releasable(name: str) -> Iterator[threading.Event]:
    """An event ``release_in_process`` sets, for a hold that is not a policy session (an
    EEVDF knob held for a client): the daemon's rollback ends it as it ends policies."""
    stop = threading.Event()
    with _WAITING_LOCK:
        _WAITING[stop] = name
    try:
        yield stop
    finally:
        with _WAITING_LOCK:
            _WAITING.pop(stop, None)


class Session:
    """A policy attached with the guard on, for code that runs work while it is active."""

    def __init__(self, obj: BpfObject, guard: Guard, outcome: RunOutcome) -> None:
        self._obj = obj
        self._guard = guard
        self.outcome = outcome
        self.stop = threading.Event()

    def set_targets(self, tgids: list[int]) -> None:
        """Add processes to the policy's target set (policies without one ignore this)."""
        if "target_tgids" not in self._obj.maps():
            return
        for tgid in tgids:
            self._obj.update_map("target_tgids", tgid.to_bytes(4, "little"), b"\x01")

    def placement(self) -> str:
        """Why a whole-system run was confined to the target's threads (empty: it was not)."""
        return self.outcome.confined

    def problem(self) -> str | None:
        """Why the scheduler is no longer ours (ejected, replaced), or None while it is."""
        event = self._guard.event
        if event is not None and self.outcome.guard_event is None:
            self.outcome.guard_event = event
            self.outcome.reason = event.kind.value
        return event.reason() if event is not None else None

    def stats(self) -> list[int]:
        return self._obj.percpu_stats()

    def wait(self, duration_s: float | None, tick: Callable[[], None]) -> GuardEvent | None:
        """Block for ``duration_s`` (None: forever), until the guard fires, or until
        ``release_in_process`` asks it to end (``outcome.reason`` is then "released")."""
        with _WAITING_LOCK:
            _WAITING[self.stop] = self.outcome.policy
        try:
            return _wait(self._guard, duration_s, tick, self.stop)
        finally:
            with _WAITING_LOCK:
                _WAITING.pop(self.stop, None)


@contextmanager
def session(req: RunRequest, store: Store) -> Iterator[Session]:
    """Attach a policy with the guard on for the ``with`` block; always detach and record."""
    resolve(req.spec)
    canary = req.target is not None and not req.switch_all
    if req.target is not None:
        if req.target.pid is not None:  # never pid 1 or a kernel thread as a canary
            partial.check_pid(req.target.pid, canary=canary)
        partial.target_tids(req.target)  # a missing pid or cgroup is reported first
    snap = _require_sched_ext()
    recover(store)
    if snap.state != "disabled":
        raise SchedExtBusy(snap.ops)
    prep = _prepare(req.spec, req.overrides, store)
    policy, obj, tunables = prep.policy, prep.obj, prep.tunables
    confined = ""
    if not canary:
        try:
            confined = _place_whole_system(req, prep)
        except BaseException as err:
            obj.close()
            if isinstance(err, HostControlsUnsupported):
                store.add_event("refused", policy.name, error=str(err), actor=req.actor)
            raise
        canary = bool(confined)
    target_text = req.target.describe() if req.target else None
    tids = partial.target_tids(req.target) if req.target and canary else []
    options = LoadOptions(tunables, partial=canary, timeout_ms=req.timeout_ms)
    # the kernel log is followed from before attach: a scheduler that errors within its
    # first few callbacks must not have its ejection line missed
    kernel_log = KmsgReader()
    try:
        sched = attach(obj, options, lambda o: fill_maps(o, req.target))
    except (SchedulerExited, SchedulerLoadError) as err:
        obj.close()
        kernel_log.close()
        store.add_event("load-failed", policy.name, error=str(err))
        if isinstance(err, SchedulerExited):
            store.quarantine(
                policy.name,
                policy.source_hash(),
                toolchain.kernel_build_id(),
                f"{err.kind_name}: {err.reason} {err.message}".strip(),
            )
        raise
    except BaseException:
        obj.close()
        kernel_log.close()
        raise
    outcome = RunOutcome(policy.name, sched.name, tunables, target_text, sched.enable_seq)
    outcome.confined = confined
    try:
        store.set_active(
            ActiveRecord(
                policy.name,
                policy.source_hash(),
                os.getpid(),
                sched.enable_seq,
                target_text,
                tunables,
                time.time(),
            )
        )
        store.add_event(
            "loaded",
            policy.name,
            enable_seq=sched.enable_seq,
            target=target_text,
            tunables=tunables,
            actor=req.actor,
            **({"confined": confined} if confined else {}),
        )
        guard = Guard(sched, kmsg=kernel_log).start()
    except BaseException:
        # attached but not yet guarded: a store (or guard) failure here must not leave the
        # scheduler running with nobody watching it (issue 12)
        _detach_unguarded(obj, sched, kernel_log)
        raise
    started = time.monotonic()
    switched: list[partial.SwitchedTask] = []
    try:
        if tids:
            planned = partial.plan_switch(tids)
            # journal first: a crash after this point still gets its threads back
            store.record_switched([(t.tid, t.policy, t.priority) for t in planned])
            switched.extend(partial.switch_to_ext(planned))
        outcome.switched_threads = len(switched)
        yield Session(obj, guard, outcome)
    finally:
        _teardown(outcome, obj, sched, guard, switched, store, policy.source_hash(), started)


def _place_whole_system(req: RunRequest, prep: Prepared) -> str:
    """Before every task moves to the policy: the host's cgroup CPU controls it does not
    honour confine it to the target's threads (the returned note says why) or refuse it
    (``HostControlsUnsupported``); "" when it may run on the whole system."""
    placement = hostcontrols.place(
        prep.policy, prep.ops_members, cgroupfs.scan_controls(), req.target is not None
    )
    if placement.confined and req.target is not None and req.target.pid is not None:
        partial.check_pid(req.target.pid, canary=True)  # now its threads will be switched
    return placement.note


def _detach_unguarded(obj: BpfObject, sched: AttachedScheduler, kernel_log: KmsgReader) -> None:
    """Remove a scheduler attached before its guard ran; every step runs, errors are logged
    (the caller re-raises the failure that got us here)."""
    for what, fn in (
        ("rollback", lambda: rollback(sched)),
        ("detach", lambda: sched.detach(timeout_s=0)),
        ("close object", obj.close),
        ("close kernel log", kernel_log.close),
    ):
        try:
            fn()
        except Exception:
            log.exception("detaching an unguarded scheduler: %s failed", what)


def _teardown(
    outcome: RunOutcome,
    obj: BpfObject,
    sched: AttachedScheduler,
    guard: Guard,
    switched: list[partial.SwitchedTask],
    store: Store,
    source_hash: str,
    started: float,
) -> None:
    """Every step runs even when an earlier one fails: a bookkeeping error must never
    leave the scheduler attached. The first error is raised after the last step."""
    errors: list[BaseException] = []

    def step(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as err:
            log.exception("teardown step failed")
            errors.append(err)

    def note_guard() -> None:
        outcome.ran_s = time.monotonic() - started
        if outcome.guard_event is None and guard.event is not None:
            outcome.guard_event = guard.event
            if outcome.reason == "duration":
                outcome.reason = guard.event.kind.value
        outcome.stats = obj.percpu_stats() if obj.loaded else []

    def restore() -> None:
        outcome.restored_threads = partial.restore(switched)
        store.clear_switched()

    def remove() -> None:
        if outcome.guard_event is None or outcome.guard_event.kind is GuardEventKind.EJECTED:
            outcome.rollback = rollback(sched)

    def record() -> None:
        outcome.final_state = scx.read_state().state
        store.clear_active()
        _record_end(store, source_hash, outcome)

    step(note_guard)
    step(guard.stop)
    step(restore)
    step(remove)
    step(lambda: sched.detach(timeout_s=0))
    step(obj.close)
    step(record)
    if errors:
        raise errors[0]


def run_policy(
    req: RunRequest, store: Store, on_attached: Callable[[RunOutcome], None] | None = None
) -> RunOutcome:
    """Attach a policy with the guard on until the duration ends, Ctrl-C, or the guard fires."""
    with session(req, store) as sess:
        outcome = sess.outcome
        if on_attached is not None:
            on_attached(outcome)
        try:
            event = sess.wait(req.duration_s, lambda: store.set_active_stats(sess.stats()))
            if event is not None:
                outcome.guard_event = event
                outcome.reason = event.kind.value
            elif sess.stop.is_set():
                outcome.reason = "released"
        except KeyboardInterrupt:
            outcome.reason = "interrupted"
    return outcome


def fill_maps(obj: BpfObject, target: Target | None) -> None:
    """Write the engine-owned maps a policy declares: its target set and the topology."""
    maps = obj.maps()
    if "target_tgids" in maps and target is not None:
        for tgid in partial.target_tgids(target):
            obj.update_map("target_tgids", tgid.to_bytes(4, "little"), b"\x01")
    if "cpu_llc" in maps:
        for cpu, llc in topology.llc_ids().items():
            obj.update_map("cpu_llc", cpu.to_bytes(4, "little"), llc.to_bytes(4, "little"))


def _wait(
    guard: Guard,
    duration_s: float | None,
    tick: Callable[[], None],
    stop: threading.Event | None = None,
) -> GuardEvent | None:
    """Wait for the duration, a guard event or ``stop``, calling ``tick`` about once a
    second (and checking ``stop`` as often)."""
    deadline = None if duration_s is None else time.monotonic() + duration_s
    while True:
        left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        if left <= 0 or (stop is not None and stop.is_set()):
            return None
        event = guard.wait(left)
        if event is not None:
            return event
        tick()


def _record_end(store: Store, source_hash: str, outcome: RunOutcome) -> None:
    event = outcome.guard_event
    detail: dict[str, object] = {
        "reason": outcome.reason,
        "ran_s": round(outcome.ran_s, 3),
        "final_state": outcome.final_state,
        "rollback": [s.action for s in outcome.rollback.steps],
    }
    if event is not None:
        detail.update(
            guard=event.reason(),
            kernel_log=event.kernel_log[-10:],
            detection_latency_ms=event.detection_latency_ms,
        )
        if event.exit_info is not None:
            detail.update(
                exit_kind=event.exit_info.kind,
                exit_kind_name=event.exit_info.kind_name,
                exit_reason=event.exit_info.reason,
                exit_msg=event.exit_info.message,
            )
    store.add_event("unloaded", outcome.policy, **detail)
    if event is not None and event.exit_info is not None and event.exit_info.is_error:
        store.quarantine(outcome.policy, source_hash, toolchain.kernel_build_id(), event.reason())


@dataclass(frozen=True, slots=True)
class ExternalRollback:
    """What ``schedagent rollback`` did from another process."""

    action: str
    state_before: str
    state_after: str
    ops_before: str | None
    #: set when the store could not be used and the kernel's view was used instead
    note: str = ""


def rollback_active(store: Store, timeout_s: float = 5.0) -> ExternalRollback:
    """Return the system to EEVDF from any process: signal the owner, then escalate."""
    before = scx.read_state()
    rec = store.active()
    knobs_action = release_knob_holders(store, timeout_s)
    if rec is None or not pid_alive(rec.owner_pid):
        recover(store)
        if before.is_enabled:
            raise SchedExtBusy(before.ops)
        return ExternalRollback(
            knobs_action or "nothing active", before.state, before.state, before.ops
        )

    def gone(s: scx.ScxState) -> bool:
        return not (s.is_enabled and s.enable_seq == rec.enable_seq)

    action = "SIGTERM to owner"
    os.kill(rec.owner_pid, signal.SIGTERM)
    ok, snap = scx.wait_for(gone, timeout_s, poll_s=0.02)
    if not ok:
        action = "SIGKILL to owner (dead-man switch)"
        os.kill(rec.owner_pid, signal.SIGKILL)
        ok, snap = scx.wait_for(gone, timeout_s, poll_s=0.02)
    if not ok and snap.enable_seq == rec.enable_seq:
        action = "sysrq-S"
        emergency.sysrq_disable_sched_ext()
        ok, snap = scx.wait_for(gone, timeout_s, poll_s=0.02)
    if not ok:
        raise KernelError(f"rollback did not disable {before.ops}: state {snap.state}")
    store.add_event("rollback", rec.policy, action=action, state_after=snap.state)
    recover(store)
    return ExternalRollback(action, before.state, snap.state, before.ops)
