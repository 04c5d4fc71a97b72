"""EEVDF's own knobs on threads: nice, a custom slice, SCHED_FIFO/RR, SCHED_BATCH/IDLE.

Linux keeps a scheduling policy, a nice level and a custom slice per thread, and a
thread created later inherits its creator's. Everything here goes through
``sched_getattr``/``sched_setattr``, so a thread's whole scheduling state is read
before it is changed and written back as it was, in one call.

The custom slice is ``sched_runtime`` on a SCHED_OTHER/SCHED_BATCH thread: EEVDF honours
it since Linux 6.12, clamped to 0.1-100 ms. SCHED_FIFO/RR threads run under the
kernel's RT throttle (``kernel.sched_rt_runtime_us``), which keeps 5% of every second
for everything else; with the throttle off an RT knob is refused, since a spinning RT
thread would then own its CPU.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import psutil

from schedagent.errors import ConfigError, TargetGone
from schedagent.kernel import partial
from schedagent.kernel.libbpf import libc
from schedagent.models import Knob, Target

log = logging.getLogger(__name__)

SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE = 0, 1, 2, 3, 5
_POLICY = {
    "fifo": SCHED_FIFO,
    "rr": SCHED_RR,
    "others-batch": SCHED_BATCH,
    "others-idle": SCHED_IDLE,
}
_NR_SCHED_SETATTR, _NR_SCHED_GETATTR = 314, 315  # x86-64
RT_RUNTIME = Path("/proc/sys/kernel/sched_rt_runtime_us")


class _SchedAttr(ctypes.Structure):
    """``struct sched_attr`` (include/uapi/linux/sched/types.h), version 1: 56 bytes."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    ]


@dataclass(frozen=True, slots=True)
class ThreadAttr:
    """A thread's scheduling state: what ``restore`` writes back."""

    tid: int
    policy: int
    nice: int
    priority: int
    runtime_ns: int
    #: whether ``runtime_ns`` is a custom slice; sched_getattr reports the default slice
    #: too, and writing it back would pin it as custom (it would no longer follow the
    #: kernel's base slice), so a default slice is written back as 0
    custom_slice: bool = False


def _sched_getattr(tid: int) -> _SchedAttr:
    """``sched_getattr`` of a thread (0: the calling one); TargetGone if it is gone."""
    attr = _SchedAttr()
    if libc().syscall(_NR_SCHED_GETATTR, tid, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        err = ctypes.get_errno()
        if err == errno.ESRCH:
            raise TargetGone(tid)
        raise OSError(err, f"sched_getattr({tid}): {os.strerror(err)}")
    return attr


def read_attr(tid: int) -> ThreadAttr:
    """The thread's policy, nice, RT priority and custom slice; TargetGone if it is gone."""
    attr = _sched_getattr(tid)
    runtime = attr.sched_runtime
    normal = attr.sched_policy in (SCHED_OTHER, SCHED_BATCH, SCHED_IDLE)
    custom = normal and runtime != 0 and runtime != default_slice_ns()
    return ThreadAttr(tid, attr.sched_policy, attr.sched_nice, attr.sched_priority, runtime, custom)


def default_slice_ns() -> int:
    """EEVDF's slice for a thread nobody gave one: the calling thread's, which schedagent
    never changes (0 where the kernel reports none)."""
    try:
        return int(_sched_getattr(0).sched_runtime)
    except OSError:
        return 0


def write_attr(want: ThreadAttr) -> None:
    """Set the thread's whole scheduling state; TargetGone if it is gone."""
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr),
        sched_policy=want.policy,
        sched_nice=want.nice,
        sched_priority=want.priority,
        sched_runtime=want.runtime_ns if want.custom_slice else 0,
    )
    if libc().syscall(_NR_SCHED_SETATTR, want.tid, ctypes.byref(attr), 0) != 0:
        err = ctypes.get_errno()
        if err == errno.ESRCH:
            raise TargetGone(want.tid)
        raise OSError(err, f"sched_setattr({want.tid}): {os.strerror(err)}")


def knobbed(before: ThreadAttr, knob: Knob) -> ThreadAttr:
    """What the thread's state becomes under ``knob``."""
    if knob.kind == "nice":
        return replace(before, nice=knob.value)
    if knob.kind == "slice":
        normal = before.policy if before.policy in (SCHED_OTHER, SCHED_BATCH) else SCHED_OTHER
        return replace(before, policy=normal, priority=0, runtime_ns=knob.value, custom_slice=True)
    if knob.kind in ("fifo", "rr"):
        return replace(
            before, policy=_POLICY[knob.kind], priority=knob.value, runtime_ns=0, custom_slice=False
        )
    return replace(before, policy=_POLICY[knob.kind], priority=0)


#: the first kernel whose EEVDF honours ``sched_runtime`` as a custom slice
SLICE_SINCE = (6, 12)


def kernel_version(release: str | None = None) -> tuple[int, int]:
    """(major, minor) of the running kernel (``os.uname().release``); (0, 0) unparsed."""
    head = (release or os.uname().release).split("-", 1)[0].split(".")
    try:
        return int(head[0]), int(head[1])
    except (IndexError, ValueError):
        return 0, 0


def check_allowed(knob: Knob, release: str | None = None) -> None:
    """Refuse a knob this host cannot apply safely, saying why and what to do."""
    if knob.kind == "slice" and kernel_version(release) < SLICE_SINCE:
        raise ConfigError(
            f"{knob.label}: this kernel ({release or os.uname().release}) ignores a custom "
            f"slice (EEVDF honours sched_runtime since Linux {SLICE_SINCE[0]}.{SLICE_SINCE[1]}); "
            "try nice:-10 instead"
        )
    if knob.kind in ("fifo", "rr"):
        try:
            runtime = int(RT_RUNTIME.read_text())
        except (OSError, ValueError):
            runtime = -1
        if runtime < 0:
            raise ConfigError(
                f"{knob.label}: the kernel's RT throttle is off ({RT_RUNTIME} is -1 or "
                "unreadable), so a spinning SCHED_FIFO/RR thread would own its CPU; "
                f"set {RT_RUNTIME} to 950000 first, or try nice:-10"
            )


class Journal(Protocol):
    """Where a thread's state is written before a knob changes it (``Store``)."""

    def record_knob(
        self, tid: int, knob: str, before: dict[str, int], after: dict[str, int]
    ) -> None: ...

    def clear_knobs(self, tids: list[int], owner_pid: int | None = None) -> None: ...

    def knob_on(self, tid: int) -> str | None: ...


class JournalEntry(Protocol):
    """One journaled thread (``store.KnobEntry``)."""

    @property
    def tid(self) -> int: ...
    @property
    def owner_pid(self) -> int: ...
    @property
    def knob(self) -> str: ...
    @property
    def before(self) -> dict[str, int]: ...
    @property
    def after(self) -> dict[str, int]: ...


def _attr(tid: int, fields: dict[str, int]) -> ThreadAttr:
    return ThreadAttr(
        tid,
        int(fields["policy"]),
        int(fields["nice"]),
        int(fields["priority"]),
        int(fields["runtime_ns"]),
        bool(fields.get("custom_slice", False)),
    )


def _fields(attr: ThreadAttr) -> dict[str, int]:
    out = asdict(attr)
    del out["tid"]
    return {k: int(v) for k, v in out.items()}


def _same(now: ThreadAttr, want: ThreadAttr) -> bool:
    """Whether ``now`` has the scheduling state ``want`` describes: policy, nice and RT
    priority, and the slice where ``want`` sets a custom one. Whether a slice reads as
    custom depends on the reading thread's own slice (``default_slice_ns``), which
    differs between processes, so a default slice is not compared."""
    if (now.policy, now.nice, now.priority) != (want.policy, want.nice, want.priority):
        return False
    return not want.custom_slice or now.runtime_ns == want.runtime_ns


def recover(
    entries: list[JournalEntry], alive: Callable[[int], bool]
) -> tuple[dict[int, list[int]], int]:
    """Put back the threads a dead process left under a knob (it was SIGKILLed, or the
    machine's daemon crashed). A thread is written back only while it still has exactly
    the state the knob gave it: one that changed since (the program set its own, or the
    tid now names another thread) is left as it is. Returns the entries done with, as
    tids by owner (to clear), and how many threads were restored."""
    done: dict[int, list[int]] = {}
    restored = 0
    for entry in entries:
        if alive(entry.owner_pid):
            continue
        done.setdefault(entry.owner_pid, []).append(entry.tid)
        try:
            if "started_ms" in entry.before and started_ms(entry.tid) != entry.before["started_ms"]:
                continue  # gone, and its id names another thread now
            now = read_attr(entry.tid)
            if _same(now, _attr(entry.tid, entry.after)):
                write_attr(_attr(entry.tid, entry.before))
                restored += 1
            else:
                log.warning(
                    "thread %d changed since %s was applied (now %s); left as it is",
                    entry.tid,
                    entry.knob,
                    now,
                )
        except TargetGone:
            continue
        except OSError as err:
            log.warning("could not restore thread %d after %s: %s", entry.tid, entry.knob, err)
    return done, restored


def started_ms(tid: int) -> int | None:
    """When a thread (or process) started, in ms since the epoch: its identity beside the
    id, which the kernel reuses; None once it is gone."""
    try:
        return round(psutil.Process(tid).create_time() * 1000)
    except psutil.Error:
        return None


class KnobSession:
    """One knob held on a set of threads for a while, then every thread put back.

    Threads that appear later (a server's workers) get the knob when ``refresh`` sees
    them. Each thread's state is recorded before it is first changed, so ``restore``
    writes back exactly what it had, also when the knob failed half-way. A thread born
    under the knob inherited it from its creator: what it is restored to is what its
    process (else the first process) had before the knob, unless it already differs
    from the knobbed state (the program set its own). Threads that existed before the
    knob are never guessed about: what they had is what they get back.

    Every id is taken with its start time: a process or thread whose id the kernel gave
    to another since is neither knobbed (``refresh``) nor written back (``restore``).
    ``restore`` writes a thread back only while it still has the state the knob gave it;
    one the program changed meanwhile keeps its own. A thread another session holds a
    knob on (the journal says so) is left to it, and ``problem`` says why.

    With a ``journal``, each thread's state is written there before it is changed and
    cleared once it is restored, so ``recover`` can put it back if this process dies
    holding the knob; a thread that could not be written back stays journaled."""

    def __init__(
        self,
        knob: Knob,
        journal: Journal | None = None,
        admit: Callable[[int], str | None] | None = None,
    ) -> None:
        check_allowed(knob)
        self.knob = knob
        self.journal = journal
        #: why a process of the roots' trees may not be touched (None: it may); asked
        #: before each thread not seen yet, so a process that joins later (a fork) or
        #: changes owner (a setuid exec) is checked as the first ones were
        self.admit = admit
        #: processes ``admit`` refused, with why: never knobbed, never written back
        self.refused: dict[int, str] = {}
        self._refused_started: dict[int, int | None] = {}
        #: root process -> its start time (ms): a root whose id was reused is dropped
        self.roots: dict[int, int] = {}
        self.before: dict[int, ThreadAttr] = {}
        self.started: dict[int, int] = {}
        #: per process, the state its first thread seen had before the knob
        self.origin: dict[int, ThreadAttr] = {}
        #: threads the knob was applied to and read back as applied
        self.applied: dict[int, ThreadAttr] = {}
        self.failure: str | None = None
        #: threads ``restore`` wrote back (None until it ran)
        self.restored: int | None = None
        #: threads ``restore`` could not write back, with why (they stay journaled)
        self.unrestored: dict[int, str] = {}
        #: threads another session holds a knob on: left to it, never journaled here
        self.skipped: set[int] = set()
        self._seeded = False

    def set_targets(self, tgids: list[int]) -> None:
        """The target's processes (for the target knobs)."""
        if not self.knob.on_others:
            self._set_roots(tgids)

    def set_others(self, tgids: list[int]) -> None:
        """Everything else the workload runs (for the ``others-`` knobs)."""
        if self.knob.on_others:
            self._set_roots(tgids)

    def _set_roots(self, tgids: list[int]) -> None:
        self.roots = {t: ms for t in tgids if (ms := started_ms(t)) is not None}
        self.refresh()

    def _threads(self) -> list[tuple[int, int]]:
        """(tgid, tid) of the live roots' trees; a root whose id was reused is dropped."""
        out = []
        for root, ms in list(self.roots.items()):
            if started_ms(root) != ms:
                del self.roots[root]  # it exited: its id may name a stranger now
                continue
            try:
                out += partial.target_threads(Target(pid=root))
            except TargetGone:
                del self.roots[root]
        return out

    def refresh(self) -> None:
        """Apply the knob to the roots' threads not seen before."""
        pairs = self._threads()
        asked: dict[int, bool] = {}
        for tgid, tid in pairs:
            if tid not in self.before and tid not in self.skipped and self._admitted(tgid, asked):
                self._apply(tgid, tid)
        # a refused process that exited goes: its id may come back as one to admit
        alive = {tgid for tgid, _ in pairs}
        for tgid in [t for t in self.refused if t not in alive]:
            del self.refused[tgid], self._refused_started[tgid]
        self._seeded = True

    def _admitted(self, tgid: int, asked: dict[int, bool]) -> bool:
        """Whether a thread of process ``tgid`` not seen yet may be touched: asked anew
        in each pass that finds one (its process may have changed owner since), once per
        process in a pass (``asked``: its threads share the owner), except of a process
        refused already (the same one: its start time matches)."""
        if self.admit is None:
            return True
        if tgid not in asked:
            asked[tgid] = self._ask(self.admit, tgid)
        return asked[tgid]

    def _ask(self, admit: Callable[[int], str | None], tgid: int) -> bool:
        started = started_ms(tgid)
        if tgid in self.refused and self._refused_started[tgid] == started:
            return False
        why = admit(tgid)
        if why is None:
            self.refused.pop(tgid, None)
            self._refused_started.pop(tgid, None)
            return True
        if tgid not in self.refused:
            log.warning("%s leaves process %d alone: %s", self.knob.label, tgid, why)
        self.refused[tgid], self._refused_started[tgid] = why, started
        return False

    def _apply(self, tgid: int, tid: int) -> None:
        try:
            if self.journal is not None and (other := self.journal.knob_on(tid)) is not None:
                self.skipped.add(tid)
                self.failure = self.failure or (
                    f"thread {tid} is under another knob ({other}); end that one first"
                )
                return
            before = read_attr(tid)
            origin = self.origin.get(tgid) or next(iter(self.origin.values()), None)
            if (
                self._seeded
                and origin is not None
                and before == replace(knobbed(origin, self.knob), tid=tid)
            ):
                before = replace(origin, tid=tid)  # born under the knob: it inherited it
            started = started_ms(tid)
            if started is None:
                return
            self.origin.setdefault(tgid, before)
            self.before[tid], self.started[tid] = before, started
            after = knobbed(before, self.knob)
            if self.journal is not None:  # journal first: a SIGKILL after this still restores
                self.journal.record_knob(
                    tid, self.knob.label, {**_fields(before), "started_ms": started}, _fields(after)
                )
            write_attr(after)
            self.applied[tid] = read_attr(tid)
            if self.journal is not None and not _same(self.applied[tid], after):
                # what the kernel made of it (a slice equal to the default reads as none)
                self.journal.record_knob(
                    tid,
                    self.knob.label,
                    {**_fields(before), "started_ms": started},
                    _fields(self.applied[tid]),
                )
        except TargetGone:
            return
        except OSError as err:
            hint = (
                " (RT group scheduling may give its cgroup no RT runtime; try nice:-10)"
                if self.knob.kind in ("fifo", "rr")
                else ""
            )
            self.failure = self.failure or (
                f"{self.knob.label} on thread {tid}: {err.strerror}{hint}"
            )

    def placement(self) -> str:
        """A knob runs where it was asked to (empty)."""
        return ""

    def problem(self) -> str | None:
        """Why the knob is not what it should be (None while it holds)."""
        self.refresh()
        return self.failure

    def restore(self) -> int:
        """Put back every thread the knob changed that is still the same thread with the
        state the knob gave it, and threads born under the knob since the last refresh;
        returns how many were written back. The others are listed in ``unrestored``."""
        restored, done = 0, []
        for tid, before in self.before.items():
            if tid not in self.applied:
                done.append(tid)  # journaled, then never changed (gone, or the write refused)
                continue
            why = self._restore_one(tid, before)
            if why is None:
                restored += 1
            if why is None or why.startswith(("gone", "changed")):
                done.append(tid)
            else:
                self.unrestored[tid] = why
        restored += self._restore_late()
        if self.journal is not None:
            self.journal.clear_knobs(done)
        self.restored = restored
        return restored

    def _restore_one(self, tid: int, before: ThreadAttr) -> str | None:
        """None when written back, else why not."""
        try:
            if started_ms(tid) != self.started.get(tid):
                return "gone (its id now names another thread)"
            now = read_attr(tid)
            if not _same(now, self.applied[tid]):
                log.warning(
                    "thread %d changed under %s (now %s); left as it is", tid, self.knob.label, now
                )
                return "changed by the program meanwhile"
            write_attr(before)
            return None
        except TargetGone:
            return "gone"
        except OSError as err:
            log.warning("could not restore thread %d after %s: %s", tid, self.knob.label, err)
            return f"not written back: {err.strerror}; `schedagent rollback` as root retries it"

    def _restore_late(self) -> int:
        """Threads born after the last refresh inherited the knob from their creator:
        those still in the knobbed state get their process's state from before it."""
        restored = 0
        asked: dict[int, bool] = {}
        for tgid, tid in self._threads():
            origin = self.origin.get(tgid) or next(iter(self.origin.values()), None)
            if tid in self.before or tid in self.skipped or origin is None:
                continue
            if not self._admitted(tgid, asked):
                continue  # not the caller's to touch, even to undo what it inherited
            try:
                if _same(read_attr(tid), knobbed(replace(origin, tid=tid), self.knob)):
                    write_attr(replace(origin, tid=tid))
                    restored += 1
            except (TargetGone, OSError):
                continue
        return restored
