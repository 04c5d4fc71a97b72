"""The always-on scheduling observer: one BPF program, read through its maps.

``bpf/observer/schedobs.bpf.c`` is compiled once per kernel build id and attached
once per process (the daemon, or one tune run) to the scheduler's tracepoints. It
counts, for every thread of a watched process tree, what ``/proc/.../schedstat`` and
``status`` would show (run time, runnable wait, timeslices, voluntary and involuntary
switches) plus wakeups and migrations, keeps runqueue-wait histograms per watched
group, and the longest runnable wait of any task on the system. Watching a target is
writing its tgids into a map (its children join by themselves at fork); a window is
two reads of one map, however many threads the target has.

procfs stays for discovery (which processes a pid's tree or a cgroup holds) and is
the fallback where the observer cannot load (no BTF, an old libbpf, not root):
:func:`shared` says why, once, and returns None.

The observer's own cost is the kernel's BPF run-time statistics of its programs
(``BPF_ENABLE_STATS`` is held on while it is attached), read from their fdinfo.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path

from schedagent.errors import (
    CompileError,
    FeatureMissing,
    KernelError,
    ObserverBusy,
    SchedagentError,
    TargetGone,
    TargetRefused,
    ToolMissing,
)
from schedagent.kernel import libbpf, partial, procstat, toolchain
from schedagent.models import FINE_SLOTS, FineHistogram, Target, ThreadSample, Window

log = logging.getLogger(__name__)

#: ``SCHEDAGENT_OBSERVER=off`` makes every reader use procfs (to compare, or to test it)
OFF_ENV = "SCHEDAGENT_OBSERVER"
#: must match schedobs.bpf.c
MAX_GROUPS = 256
MAX_THREADS = 16384
#: entries of threads that exited this long ago are deleted (nothing reads them)
KEEP_EXITED_S = 30.0
#: the target's presence is checked this often inside a window
_PRESENCE_S = 0.25
#: discoveries after the watch, for the children a target forked during the first one
_REDISCOVER_ROUNDS = 3
BPF_STATS_RUN_TIME = 0
_U64 = ctypes.c_uint64


class TStat(ctypes.Structure):
    """``struct tstat`` of schedobs.bpf.c: one watched thread's running counters."""

    _fields_ = [  # ctypes declares its layout as a class list
        ("tgid", ctypes.c_uint32),
        ("group", ctypes.c_uint32),
        ("run_ns", _U64),
        ("wait_ns", _U64),
        ("slices", _U64),
        ("voluntary", _U64),
        ("involuntary", _U64),
        ("wakeups", _U64),
        ("migrations", _U64),
        ("first_ns", _U64),
        ("exited_ns", _U64),
        ("on_cpu_ns", _U64),
        ("base_run_ns", _U64),
        ("base_wait_ns", _U64),
        ("base_slices", _U64),
        ("base_voluntary", _U64),
        ("base_involuntary", _U64),
    ]


class _Worst(ctypes.Structure):
    _fields_ = [("wait_ns", _U64), ("tid", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class _Waiting(ctypes.Structure):
    _fields_ = [("tid", ctypes.c_uint32), ("tgid", ctypes.c_uint32), ("wait_ns", _U64)]


_GHist = _U64 * (2 * FINE_SLOTS)


@dataclass(frozen=True, slots=True)
class ThreadCounters:
    """One watched thread's counters as read (run time includes a slice in progress)."""

    tid: int
    tgid: int
    group: int
    run_ns: int
    wait_ns: int
    slices: int
    voluntary: int
    involuntary: int
    wakeups: int
    migrations: int
    #: CLOCK_MONOTONIC seconds (``time.monotonic()``) of its first event, and of its exit
    first_s: float
    exited_s: float | None
    #: its counters when the observer first saw it (run, wait, slices, vol, invol)
    base: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class ObserverCost:
    """What the observer's programs cost since they were attached (kernel BPF stats)."""

    run_ns: int
    events: int
    attached_s: float
    programs: int
    #: watched thread entries that did not fit in the map since attach
    dropped: int
    #: whether the kernel's BPF statistics were on (else run_ns and events are 0)
    measured: bool = True

    @property
    def cpu_pct(self) -> float:
        """Percent of one CPU the programs took since attach."""
        return 100.0 * self.run_ns / 1e9 / self.attached_s if self.attached_s > 0 else 0.0

    @property
    def ns_per_event(self) -> float:
        return self.run_ns / self.events if self.events else 0.0


@dataclass(frozen=True, slots=True)
class LongWait:
    """A task's runnable wait: the longest that ended lately, or one still going on."""

    tid: int
    wait_ns: int
    ongoing: bool


class Observer:
    """The attached observer program and its maps. Thread-safe; one per process."""

    def __init__(self, path: Path, *, cost_stats: bool = False) -> None:
        lib = libbpf.lib_at_least(libbpf.OBSERVER_MIN_VERSION)
        self._lib = lib
        self._lock = threading.RLock()
        self._links: list[int] = []
        self._prog_fds: list[int] = []
        self._iter_link: int | None = None
        self._sync_link: int | None = None
        self._stats_fd = -1
        libbpf.capture()
        self._obj = lib.bpf_object__open_file(str(path).encode(), None)
        if not self._obj:
            raise _load_error(f"cannot open {path}", libbpf.last_errno())
        try:
            ret = lib.bpf_object__load(self._obj)
            if ret:
                raise _load_error("the kernel refused the observer", libbpf.last_errno(ret))
            self._attach_all()
            self._fd = {
                name: self._map_fd(name)
                for name in ("groups", "threads", "hist", "worst", "dropped", "generation")
            }
            if cost_stats:
                # kernel-kept run time per program, for as long as this fd is open. It is
                # system-wide: every BPF program, a sched_ext candidate's too, then pays
                # two clock reads per run, so only a process that reports the cost
                # (the daemon, the overhead benchmark) asks for it
                self._stats_fd = lib.bpf_enable_stats(BPF_STATS_RUN_TIME)
        except BaseException:
            self.close()
            raise
        self.attached_at = time.monotonic()
        self._groups: OrderedDict[Hashable, int] = OrderedDict()
        self._tgids: dict[int, set[int]] = {}
        #: groups a window is reading now: never taken for another key meanwhile
        self._pinned: dict[int, int] = {}
        #: per window in progress, when it began (ns): its exited threads are kept
        self._reading_since: dict[int, int] = {}
        self._ncpus = max(1, lib.libbpf_num_possible_cpus())
        self._batch = (ctypes.c_uint32 * MAX_THREADS)(), (TStat * MAX_THREADS)()

    # --- life ------------------------------------------------------------------------

    def _attach_all(self) -> None:
        lib, prog = self._lib, None
        while True:
            prog = lib.bpf_object__next_program(self._obj, prog)
            if not prog:
                return
            name = lib.bpf_program__name(prog).decode()
            link = lib.bpf_program__attach(prog)
            if not link:
                raise _load_error(f"cannot attach {name}", libbpf.last_errno())
            self._links.append(link)
            self._prog_fds.append(lib.bpf_program__fd(prog))
            if name == "obs_waiting":
                self._iter_link = link
            elif name == "obs_sync":
                self._sync_link = link

    def _map_fd(self, name: str) -> int:
        ptr = self._lib.bpf_object__find_map_by_name(self._obj, name.encode())
        fd = self._lib.bpf_map__fd(ptr) if ptr else -1
        if fd < 0:
            raise _load_error(f"the observer object has no map {name}", 2)
        return int(fd)

    def close(self) -> None:
        """Detach every program and free the object (also what process exit does)."""
        with self._lock:
            for link in self._links:
                self._lib.bpf_link__destroy(link)
            self._links.clear()
            if self._stats_fd >= 0:
                os.close(self._stats_fd)
                self._stats_fd = -1
            if self._obj:
                self._lib.bpf_object__close(self._obj)
                self._obj = None

    # --- the watched set ---------------------------------------------------------------

    def watch(self, key: Hashable, tgids: Iterable[int]) -> int:
        """Watch these processes (and every child they start) as group ``key``.

        Returns the group's number. Every listed process is (re)claimed for the group,
        so one that another key took meanwhile comes back, and processes no longer
        listed leave it. A new key past the map's 256 groups takes the place of the
        longest unused one that no window is reading (``ObserverBusy`` when none).
        """
        return self._claim(key, tgids)[0]

    def _claim(self, key: Hashable, tgids: Iterable[int]) -> tuple[int, int]:
        """``watch``, and how many of the listed processes were not in the group yet."""
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                group = self._new_group()
                self._groups[key] = group
            self._groups.move_to_end(key)
            want = set(tgids)
            have = self._tgids.setdefault(group, set())
            added = 0
            value = ctypes.c_uint32()
            for tgid in want:
                ret = self._lib.bpf_map_lookup_elem(
                    self._fd["groups"], ctypes.byref(ctypes.c_uint32(tgid)), ctypes.byref(value)
                )
                if ret or value.value != group:
                    self._update(self._fd["groups"], ctypes.c_uint32(tgid), ctypes.c_uint32(group))
                    have.add(tgid)
                    added += 1
            left = have - want
            for tgid in left:
                self._delete(self._fd["groups"], ctypes.c_uint32(tgid))
            self._tgids[group] = want
            if added or left:
                self._bump()
                # their threads start counting now, a thread on a CPU included
                self._read_iter(self._sync_link)
            return group, added

    def _watch_tree(self, target: Target, tgids: set[int]) -> int:
        """``watch`` the target's processes, and then those it started meanwhile.

        A child forked between discovery and the watch is not joined to the group by
        the fork hook (its parent was not watched yet): a job set forking 400 jobs at
        once can fork them all in that gap. Discovery again after the watch finds them,
        and children forked after it join at fork. A few rounds settle it; a process
        that started and ended in the gap is the only one lost. Each round lists what
        lives now, so a process that exited meanwhile leaves the group (its id may be
        reused), and the rounds end once one adds nothing the fork hook had not joined.
        """
        group, _ = self._claim(target, tgids)
        for _ in range(_REDISCOVER_ROUNDS):
            try:
                now = partial.target_tgids(target)
            except (TargetGone, TargetRefused):
                break  # the window's own reads say it is gone
            group, added = self._claim(target, now)
            if not added:
                break
        return group

    def _new_group(self) -> int:
        used = set(self._groups.values())
        free = [g for g in range(MAX_GROUPS) if g not in used]
        if free:
            group = free[0]
        else:
            # the longest unused group that no window is reading right now
            key = next((k for k, g in self._groups.items() if not self._pinned.get(g)), None)
            if key is None:
                raise ObserverBusy(MAX_GROUPS)
            group = self._groups[key]
            self._release(key)
        # a reused group starts with empty histograms
        self._update(self._fd["hist"], ctypes.c_uint32(group), _GHist())
        return group

    def forget(self, key: Hashable) -> None:
        """Stop watching group ``key``: its processes, its children and their counters."""
        with self._lock:
            self._release(key)

    def _release(self, key: Hashable) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        for tgid in self._tgids.pop(group, set()):
            self._delete(self._fd["groups"], ctypes.c_uint32(tgid))
        # children that joined at fork are known only to the map: found by their group
        keys, values = self._batch
        for i in range(self._dump(keys, values)):
            if values[i].group == group:
                self._delete(self._fd["groups"], ctypes.c_uint32(values[i].tgid))
                self._delete(self._fd["threads"], ctypes.c_uint32(keys[i]))
        self._bump()

    def groups_watched(self) -> int:
        with self._lock:
            return len(self._groups)

    def _bump(self) -> None:
        """Tell the program the groups changed: every task looks its tgid up again."""
        gen = _U64()
        self._lookup(self._fd["generation"], ctypes.c_uint32(0), gen)
        gen.value += 1
        self._update(self._fd["generation"], ctypes.c_uint32(0), gen)

    # --- reading -------------------------------------------------------------------------

    def threads(self, group: int | None = None) -> dict[int, ThreadCounters]:
        """Every watched thread's counters now (one batch read), optionally one group's.

        Entries of threads that exited more than ``KEEP_EXITED_S`` ago are deleted here.
        """
        with self._lock:
            keys, values = self._batch
            count = self._dump(keys, values)
            now_ns = time.monotonic_ns()
            # what exited before a window in progress began is still that window's
            keep_after = min([now_ns - KEEP_EXITED_S * 1e9, *self._reading_since.values()])
            out: dict[int, ThreadCounters] = {}
            stale: list[int] = []
            for i in range(count):
                tid, t = int(keys[i]), values[i]
                if t.exited_ns and t.exited_ns < keep_after:
                    stale.append(tid)
                    continue
                if group is not None and t.group != group:
                    continue
                running = now_ns - t.on_cpu_ns if t.on_cpu_ns and now_ns > t.on_cpu_ns else 0
                out[tid] = ThreadCounters(
                    tid,
                    t.tgid,
                    t.group,
                    t.run_ns + running,
                    t.wait_ns,
                    t.slices,
                    t.voluntary,
                    t.involuntary,
                    t.wakeups,
                    t.migrations,
                    t.first_ns / 1e9,
                    t.exited_ns / 1e9 if t.exited_ns else None,
                    (
                        t.base_run_ns,
                        t.base_wait_ns,
                        t.base_slices,
                        t.base_voluntary,
                        t.base_involuntary,
                    ),
                )
            for tid in stale:
                self._delete(self._fd["threads"], ctypes.c_uint32(tid))
            return out

    def _dump(self, keys: ctypes.Array[ctypes.c_uint32], values: ctypes.Array[TStat]) -> int:
        """Read the whole ``threads`` map into the buffers; the number of entries read."""
        token_in, token_out = ctypes.c_uint64(0), ctypes.c_uint64(0)
        total, first = 0, True
        while total < MAX_THREADS:
            count = ctypes.c_uint32(MAX_THREADS - total)
            ret = self._lib.bpf_map_lookup_batch(
                self._fd["threads"],
                None if first else ctypes.byref(token_in),
                ctypes.byref(token_out),
                ctypes.byref(keys, total * ctypes.sizeof(ctypes.c_uint32)),
                ctypes.byref(values, total * ctypes.sizeof(TStat)),
                ctypes.byref(count),
                None,
            )
            total += count.value
            if ret == 0:
                token_in.value, first = token_out.value, False
                continue
            if libbpf.last_errno(ret) == 2:  # ENOENT: the last batch
                return total
            raise OSError(libbpf.last_errno(ret), "reading the observer's thread map failed")
        return total

    def wait_hist(self, group: int, preempted: bool = False) -> FineHistogram:
        """A group's running runqueue-wait counts since it was made (diff two for a
        window): woken to run, or with ``preempted``, preempted to run."""
        value = _GHist()
        with self._lock:
            self._lookup(self._fd["hist"], ctypes.c_uint32(group), value)
        start = FINE_SLOTS if preempted else 0
        return FineHistogram(tuple(int(v) for v in value[start : start + FINE_SLOTS]))

    def take_worst(self) -> LongWait | None:
        """The longest runnable wait that ended (any task, any CPU) since the last call;
        the record starts again from zero."""
        values = (_Worst * self._ncpus)()
        zeros = (_Worst * self._ncpus)()
        with self._lock:
            self._lookup(self._fd["worst"], ctypes.c_uint32(0), values)
            self._update(self._fd["worst"], ctypes.c_uint32(0), zeros)
        best = max(values, key=lambda w: w.wait_ns)
        return LongWait(int(best.tid), int(best.wait_ns), False) if best.wait_ns else None

    def waiting_now(self) -> list[LongWait]:
        """Tasks runnable without a CPU right now for 1 ms or more (a task iterator)."""
        data = self._read_iter(self._iter_link)
        size = ctypes.sizeof(_Waiting)
        found = []
        for off in range(0, len(data) - size + 1, size):
            w = _Waiting.from_buffer_copy(data, off)
            found.append(LongWait(int(w.tid), int(w.wait_ns), True))
        return found

    def cost(self) -> ObserverCost:
        """The programs' run time and events since attach (``bpf_stats``, from fdinfo)."""
        run_ns = events = 0
        for fd in self._prog_fds:
            with contextlib.suppress(OSError):
                info = Path(f"/proc/self/fdinfo/{fd}").read_text()
                run = re.search(r"run_time_ns:\s*(\d+)", info)
                cnt = re.search(r"run_cnt:\s*(\d+)", info)
                run_ns += int(run.group(1)) if run else 0
                events += int(cnt.group(1)) if cnt else 0
        lost = _U64()
        with self._lock:
            self._lookup(self._fd["dropped"], ctypes.c_uint32(0), lost)
        return ObserverCost(
            run_ns,
            events,
            time.monotonic() - self.attached_at,
            len(self._prog_fds),
            int(lost.value),
            self._stats_fd >= 0,
        )

    def _read_iter(self, link: int | None) -> bytes:
        """Run a task iterator over every task and return what it wrote."""
        if link is None:
            return b""
        with self._lock:
            fd = self._lib.bpf_iter_create(self._lib.bpf_link__fd(link))
        if fd < 0:
            raise OSError(libbpf.last_errno(fd), "the observer's task iterator failed")
        data = bytearray()
        try:
            while chunk := os.read(fd, 65536):
                data += chunk
        finally:
            os.close(fd)
        return bytes(data)

    # --- map calls -----------------------------------------------------------------------

    def _lookup(self, fd: int, key: ctypes._CData, value: ctypes._CData) -> None:
        ret = self._lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
        if ret:
            raise OSError(libbpf.last_errno(ret), "reading an observer map failed")

    def _update(self, fd: int, key: ctypes._CData, value: ctypes._CData) -> None:
        ret = self._lib.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), 0)
        if ret:
            # E2BIG: a map is full (16384 watched processes); the caller gets a clear error
            raise KernelError(
                f"the observer could not record a watched process: "
                f"{libbpf.errno_text(libbpf.last_errno(ret))}; watch fewer or smaller targets"
            )

    def _delete(self, fd: int, key: ctypes._CData) -> None:
        self._lib.bpf_map_delete_elem(fd, ctypes.byref(key))  # gone already is fine

    # --- a window ------------------------------------------------------------------------

    def window(self, target: Target, duration_s: float) -> Window:
        """Watch ``target`` for ``duration_s``: the same ``Window`` procfs polling gives,
        from two reads of the thread map. TargetGone if it is gone at the start."""
        try:
            pairs = partial.target_threads(target)  # discovery; raises TargetGone
        except TargetGone:
            if target.pid is None or not os.path.exists(f"/proc/{target.pid}"):
                raise
            # a zombie (exited, not reaped yet): an empty window that says it exited,
            # as procfs polling reports it
            now = procstat.read_system()
            return Window(1e-3, target_exited=True, system_start=now, system_end=now)
        if not pairs:
            raise TargetGone(target.pid or 0)
        with self._lock:
            group = self._watch_tree(target, {tgid for tgid, _ in pairs})
            self._pinned[group] = self._pinned.get(group, 0) + 1
            token = object()
            self._reading_since[id(token)] = time.monotonic_ns()
        try:
            window = Window(duration_s, system_start=procstat.read_system())
            started = time.monotonic()
            first = self.threads(group)
            deadline = started + duration_s
            while (left := deadline - time.monotonic()) > 0:
                time.sleep(min(left, _PRESENCE_S))
                if target.pid is not None and _gone(target.pid):
                    window.target_exited = True
                    break
            last = self.threads(group)
        finally:
            with self._lock:
                self._pinned[group] -= 1
                del self._reading_since[id(token)]
        ended = time.monotonic()
        window.duration_s = max(ended - started, 1e-3)
        window.system_end = procstat.read_system()
        spans: list[tuple[float, int]] = []  # (time, +1 born / -1 ended): the most at once
        exited_inside: set[int] = set()
        for tid, t in last.items():
            if t.exited_s is not None and t.exited_s < started:
                continue  # ended before the window: nothing of it is in here
            before = first.get(tid)
            if before is None or before.tgid != t.tgid:
                # first seen inside the window: it counts from where the observer first
                # saw it (its birth, or when its process joined the target)
                at = max(started, min(t.first_s, ended))
                window.first[tid] = ThreadSample(tid, t.tgid, *t.base, at)
            else:
                window.first[tid] = _sample(before, started)
            end_s = t.exited_s if t.exited_s is not None else ended
            window.last[tid] = _sample(t, end_s)
            window.tids_seen.add(tid)
            window.tgids_seen.add(t.tgid)
            spans += [(window.first[tid].at, 1), (end_s, -1)]
            if t.exited_s is not None:
                exited_inside.add(t.tgid)
        alive_end = {t.tgid for tid, t in last.items() if tid in window.last and t.exited_s is None}
        window.tgids_last = alive_end
        window.tgids_exited = exited_inside - alive_end
        window.max_threads = _most_at_once(spans)
        return window


def _gone(pid: int) -> bool:
    """Whether a process has exited (a zombie not yet reaped has)."""
    proc = procstat.read_process(pid)
    return proc is None or proc[0] == "Z"


def _most_at_once(spans: list[tuple[float, int]]) -> int:
    """The most threads alive at once, from their (time, +1 or -1) births and ends."""
    most = alive = 0
    for _at, step in sorted(spans, key=lambda e: (e[0], -e[1])):
        alive += step
        most = max(most, alive)
    return most


def _sample(t: ThreadCounters, at: float) -> ThreadSample:
    return ThreadSample(
        t.tid, t.tgid, t.run_ns, t.wait_ns, t.slices, t.voluntary, t.involuntary, at
    )


def _load_error(what: str, err: int) -> FeatureMissing:
    tail = " | ".join(line.strip() for line in libbpf.take_messages()[-6:] if line.strip())
    return FeatureMissing(
        "the BPF observer",
        f"{what}: {libbpf.errno_text(err)}{f' ({tail[-400:]})' if tail else ''}",
        "run as root on a kernel with BTF (CONFIG_DEBUG_INFO_BTF); schedagent reads "
        "procfs instead meanwhile",
    )


# --- the process's one observer ------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: Observer | None = None
_why_not: str | None = None
_cost_stats = False


def report_cost() -> None:
    """Have this process's observer keep the kernel's BPF statistics on, so its cost can
    be reported (the daemon's status and metrics, the overhead benchmark). Call before
    the first :func:`shared`."""
    global _cost_stats
    _cost_stats = True


def shared() -> Observer | None:
    """This process's observer, compiled and attached at the first call; None (and the
    reason in :func:`unavailable`) where it cannot run or ``SCHEDAGENT_OBSERVER=off``."""
    global _shared, _why_not
    if os.environ.get(OFF_ENV, "").lower() in ("off", "0", "no", "false"):
        return None
    with _shared_lock:
        if _shared is not None or _why_not is not None:
            return _shared
        try:
            built = toolchain.compile_observer()
            _shared = Observer(built.path, cost_stats=_cost_stats)
            log.info(
                "observer attached (%s)",
                "cached object" if built.cached else f"compiled in {built.compile_s:.1f} s",
            )
        except (FeatureMissing, ToolMissing, CompileError, OSError) as err:
            _why_not = str(err).splitlines()[0][:300]
            log.warning("observer unavailable, reading procfs instead: %s", _why_not)
        except SchedagentError as err:
            _why_not = str(err).splitlines()[0][:300]
            log.warning("observer unavailable, reading procfs instead: %s", _why_not)
        return _shared


def current() -> Observer | None:
    """This process's observer if it is attached already (never attaches it)."""
    return _shared


def unavailable() -> str | None:
    """Why :func:`shared` returned None (None when it did not, or was not asked yet)."""
    if os.environ.get(OFF_ENV, "").lower() in ("off", "0", "no", "false"):
        return f"switched off ({OFF_ENV}=off)"
    return _why_not


def reset_shared() -> None:
    """Detach this process's observer (tests, and a daemon that stops)."""
    global _shared, _why_not
    with _shared_lock:
        if _shared is not None:
            _shared.close()
        _shared, _why_not = None, None


def observe(target: Target, duration_s: float) -> Window:
    """A window of ``target`` from the observer, or from procfs polling without one."""
    obs = shared()
    if obs is None:
        return procstat.observe(target, duration_s)
    if target.pid is not None and not os.path.exists(f"/proc/{target.pid}"):
        raise TargetGone(target.pid)
    # a zombie (exited, not yet reaped) is still found: its window ends at once, with
    # target_exited set, as procfs polling reports it. Discovery runs at raised
    # priority, as polling does: 400 CPU-bound jobs otherwise leave it a 1/400 share,
    # and the window starts after the jobs it should have seen have ended
    with procstat.priority():
        return obs.window(target, duration_s)
