"""Deep, on-demand probes through bcc (read-only).

The probe program is ``bpf/probes/schedlat.bcc.c``: wakeup-to-run latency and
on-CPU burst histograms per target, plus wakeup and migration counts. It
reports its own overhead: the kernel's BPF run-time statistics for its
programs over the window (``kernel.bpf_stats_enabled`` is switched on for the
window and restored afterwards).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from schedagent.config import DATA_ROOT
from schedagent.errors import FeatureMissing
from schedagent.kernel import partial

# the histograms and the report are value types every layer prints; re-exported here
from schedagent.models import (  # noqa: F401
    FINE_SLOTS,
    DeepReport,
    FineHistogram,
    Histogram,
    Target,
    fine_edges,
)

PROBE_SOURCE = DATA_ROOT / "bpf" / "probes" / "schedlat.bcc.c"
ATTACH_POINTS = ("sched_wakeup", "sched_wakeup_new", "sched_switch", "sched_migrate_task")
_BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def bcc_available() -> bool:
    """Whether bcc's Python module can be imported here."""
    return importlib.util.find_spec("bcc") is not None


def _prog_stats(fds: list[int]) -> tuple[int, int]:
    run_ns = events = 0
    for fd in fds:
        try:
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        run = re.search(r"run_time_ns:\s*(\d+)", info)
        cnt = re.search(r"run_cnt:\s*(\d+)", info)
        run_ns += int(run.group(1)) if run else 0
        events += int(cnt.group(1)) if cnt else 0
    return run_ns, events


class Probe:
    """The compiled, attached probes; targets can be added while they run."""

    def __init__(self, bpf: Any) -> None:  # Any: a bcc.BPF, and bcc ships no type hints
        self._bpf = bpf
        # bcc keys its loaded functions by bytes
        funcs = bpf.funcs
        self._fds = [
            fn.fd
            for fn in (funcs.get(f"raw_tracepoint__{tp}".encode()) for tp in ATTACH_POINTS)
            if fn is not None
        ]
        self._started = time.monotonic()

    def add_targets(self, tgids: list[int]) -> None:
        targets = self._bpf[b"targets"]
        for tgid in tgids:
            targets[ctypes.c_uint32(tgid)] = ctypes.c_uint8(1)

    def wake_fine(self) -> FineHistogram:
        """The running wakeup latency counts since attach (diff two to get a window)."""
        table = self._bpf[b"wake_fine"]
        counts = [0] * FINE_SLOTS
        for key, value in table.items():
            counts[int(key.value)] = int(value.value)
        return FineHistogram(tuple(counts))

    def report(self) -> DeepReport:
        elapsed = time.monotonic() - self._started
        run_ns, events = _prog_stats([fd for fd in self._fds if fd is not None])
        counts = self._bpf[b"counts"]
        return DeepReport(
            ATTACH_POINTS,
            _hist(self._bpf[b"wake_lat"]),
            self.wake_fine(),
            _hist(self._bpf[b"burst"]),
            int(counts[ctypes.c_int(0)].value),
            int(counts[ctypes.c_int(1)].value),
            elapsed,
            run_ns,
            events,
        )


@contextlib.contextmanager
def attached() -> Iterator[Probe]:
    """Compile and attach the probes (with BPF run-time stats on) for the ``with`` block."""
    if not bcc_available():
        raise FeatureMissing(
            "bcc",
            "the python module 'bcc' is not importable",
            "apt-get install python3-bpfcc and use a venv with "
            "--system-site-packages; the cheap profile still works",
        )
    from bcc import BPF  # type: ignore[import-not-found]  # Debian's bcc ships no stubs

    previous = _BPF_STATS.read_text().strip() if _BPF_STATS.exists() else None
    if previous is not None:
        _BPF_STATS.write_text("1")
    try:
        # bcc auto-attaches RAW_TRACEPOINT_PROBE functions and keeps their fds
        bpf = BPF(text=PROBE_SOURCE.read_bytes())
        try:
            yield Probe(bpf)
        finally:
            bpf.cleanup()
    finally:
        if previous is not None:
            _BPF_STATS.write_text(previous)


def run_deep(target: Target, duration_s: float) -> DeepReport:
    """Attach the probes for ``duration_s`` and return histograms and overhead."""
    tgids = partial.target_tgids(target)  # a missing target is reported before compiling
    with attached() as probe:
        # compiling takes a while (about a minute under emulation): look again for
        # processes the target started meanwhile, and say so if it is gone
        probe.add_targets(sorted({*tgids, *partial.target_tgids(target)}))
        time.sleep(duration_s)
        return probe.report()


def _hist(table: Any) -> Histogram:  # Any: a bcc table (no type hints)
    buckets = [0] * 64
    for key, value in table.items():
        buckets[int(key.value)] = int(value.value)
    last = max((i for i, n in enumerate(buckets) if n), default=0)
    return Histogram("us", buckets[: last + 1])
