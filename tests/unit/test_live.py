"""Issue 7: tune's live metric, the p99 wakeup latency from the probe's fine histogram."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedagent.config import PROJECT_ROOT
from schedagent.errors import ConfigError, FeatureMissing
from schedagent.execution import measure as live
from schedagent.kernel import bccprobes
from schedagent.kernel.bccprobes import FINE_SLOTS, FineHistogram, Histogram, fine_edges
from schedagent.models import Slo, Target

LATENCY = Slo("p99_wakeup_latency", "<=", 2000.0, "us", "r")
THROUGHPUT = Slo("completed_ops_per_s", "max", None, "ops/s", "r")


def _c_slot(us: int) -> int:
    """The slot formula of bpf/probes/schedlat.bcc.c, transcribed."""
    if us < 8:
        return us
    octave = us.bit_length() - 1
    return min(8 + 8 * (octave - 3) + ((us >> (octave - 3)) & 7), FINE_SLOTS - 1)


def test_the_c_slot_formula_is_the_one_the_python_side_decodes() -> None:
    src = (PROJECT_ROOT / "bpf/probes/schedlat.bcc.c").read_text()
    assert "slot = 8 + 8 * (oct - 3) + ((us >> (oct - 3)) & 7);" in src
    assert re.search(r"#define FINE_SLOTS\s+256\b", src) and FINE_SLOTS == 256
    for us in [*range(300), 1000, 4095, 4096, 12345, 10**6, 2**33 + 5]:
        lo, hi = fine_edges(_c_slot(us))
        assert lo <= us < hi, (us, lo, hi)
    # slots tile the line: each one starts where the previous ended
    assert all(fine_edges(s)[1] == fine_edges(s + 1)[0] for s in range(FINE_SLOTS - 1))
    # and are at most 12.5% wide above 8 µs
    assert all((hi - lo) / lo <= 0.125 for lo, hi in map(fine_edges, range(8, FINE_SLOTS)))


def _hist(values: list[int]) -> FineHistogram:
    counts = [0] * FINE_SLOTS
    for v in values:
        counts[_c_slot(v)] += 1
    return FineHistogram(tuple(counts))


def test_fine_percentile_is_within_a_slot_of_the_exact_one() -> None:
    values = [100] * 980 + [5000] * 15 + [40000] * 5  # p99 falls in the 5 ms group
    p99 = _hist(values).percentile(99)
    assert 5000 * 0.875 <= p99 <= 5000 * 1.125
    assert _hist([100] * 1000).percentile(99) == pytest.approx(100, rel=0.125)
    assert FineHistogram((0,) * FINE_SLOTS).percentile(99) == 0.0


def test_a_window_is_the_difference_of_two_snapshots() -> None:
    before = _hist([100] * 50)
    after = _hist([100] * 50 + [9000] * 50)
    window = after.minus(before)
    assert window.total == 50
    assert window.percentile(50) == pytest.approx(9000, rel=0.125)


def test_log2_buckets_are_read_the_way_bcc_fills_them() -> None:
    # bpf_log2l(v) = floor(log2 v) + 1: 3 µs lands in bucket 2, which holds [2, 4)
    hist = Histogram("us", [0, 0, 10, 0, 1])
    assert hist.percentile(50) == 4.0 and hist.percentile(100) == 16.0
    lines = hist.render().splitlines()
    assert lines[0].split()[0] == "2-3" and lines[1].split()[0] == "8-15"


class _FakeProbe:
    """Stands in for the attached bcc probe: 'wakeups' arrive between two reads."""

    def __init__(self, per_window: list[int]) -> None:
        self.per_window, self.reads, self.targets = per_window, 0, set[int]()
        self.seen: list[int] = []

    def add_targets(self, tgids: list[int]) -> None:
        self.targets.update(tgids)

    def wake_fine(self) -> FineHistogram:
        self.reads += 1
        self.seen += self.per_window if self.reads % 2 == 0 else []
        return _hist(self.seen)


def test_meter_reports_the_p99_of_each_window_and_skips_thin_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeProbe([200] * 97 + [3000] * 3)

    @contextlib.contextmanager
    def attached() -> Iterator[_FakeProbe]:
        yield fake

    monkeypatch.setattr(bccprobes, "attached", attached)
    with live.Meter(Target(pid=os.getpid()), LATENCY) as meter:
        assert meter.metric.name == "p99_wakeup_us" and meter.metric.direction == "lower"
        first = meter.measure(0.25)
        second = meter.measure(0.25)
        fake.per_window = [200] * 5
        thin = meter.measure(0.25)
    assert os.getpid() in fake.targets
    # each window counts only its own wakeups: the same p99 twice, not a growing one
    assert first.value == pytest.approx(3000, rel=0.125) and second.value == first.value
    assert first.invalid is None
    assert thin.invalid is not None and "5 wakeups" in thin.invalid


def test_meter_without_bcc_measures_the_cheap_counter_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @contextlib.contextmanager
    def missing() -> Iterator[None]:
        raise FeatureMissing("bcc", "the python module 'bcc' is not importable", "install it")
        yield

    monkeypatch.setattr(bccprobes, "attached", missing)
    with live.Meter(Target(pid=os.getpid()), LATENCY) as meter:
        assert meter.metric.name == "runq_wait_us"
        assert "no p99 probe" in meter.metric.explains
        sample = meter.measure(0.2)
    assert sample.invalid is None and sample.value >= 0
    # throughput SLOs never compile the probe
    with live.Meter(Target(pid=os.getpid()), THROUGHPUT) as meter:
        assert meter.metric.name == "cpus_used" and meter.fallback_note is None


def test_latency_log_yields_only_whole_lines_appended_since_the_last_read(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("0 0 99999.0\n")  # before tune started: never counted
    log = live.LatencyLog(path)
    with path.open("a") as fh:
        fh.write("1 0 120.5\n2 1 80\nGET /x 200 latency=4000\n-\n3 1 7")  # last line half-written
    assert log.take() == [120.5, 80.0, 4000.0]
    assert log.malformed == 1
    with path.open("a") as fh:
        fh.write("00.0\n")
    assert log.take() == [700.0]  # the half line, once it was finished
    path.write_text("4 0 10\n")  # rotated: read from the start again
    assert log.take() == [10.0]
    path.unlink()
    assert log.take() == []  # removed: an empty window, no crash


def test_a_flood_is_cut_to_its_newest_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "MAX_LOG_BYTES_PER_WINDOW", 64)
    path = tmp_path / "access.log"
    path.write_text("")
    log = live.LatencyLog(path)
    path.write_text("".join(f"{i} 0 {i}.0\n" for i in range(100)))
    values = log.take()
    assert values and values[-1] == 99.0 and len(values) < 100
    assert all(v >= 90 for v in values)  # the newest, starting at a line start


def test_meter_with_a_latency_log_judges_the_logged_p99(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "with open(sys.argv[1], 'a', buffering=1) as fh:\n"
                "    for i in range(100000):\n"
                "        fh.write(f'{i} 0 {5000 if i % 10 == 0 else 100}\\n'); time.sleep(0.001)\n"
            ),
            str(path),
        ]
    )
    try:
        with live.Meter(Target(pid=writer.pid), LATENCY, latency_log=path) as meter:
            assert meter.metric.name == "p99_request_us" and str(path) in meter.metric.explains
            sample = meter.measure(0.5)
    finally:
        writer.kill()
        writer.wait()
    assert sample.invalid is None
    assert sample.value == 5000.0  # 1 request in 10 took 5 ms: the p99 is 5 ms
    with pytest.raises(ConfigError, match="not a readable file"):
        live.Meter(Target(pid=os.getpid()), LATENCY, latency_log=tmp_path / "nope")
    assert live.percentile([float(v) for v in range(1, 101)], 99) == 99.0
    assert live.percentile([], 99) == 0.0


def test_dry_run_states_the_metric_a_real_run_would_use(monkeypatch: pytest.MonkeyPatch) -> None:
    assert live.planned_metric(LATENCY, "/var/log/app.log").name == "p99_request_us"
    monkeypatch.setattr(bccprobes, "bcc_available", lambda: True)
    assert live.planned_metric(LATENCY, None).name == "p99_wakeup_us"
    assert live.planned_metric(THROUGHPUT, None).name == "cpus_used"
    monkeypatch.setattr(bccprobes, "bcc_available", lambda: False)
    assert live.planned_metric(LATENCY, None).name == "runq_wait_us"


def test_messaging_is_measured_as_bytes_moved_per_second(tmp_path: Path) -> None:
    """A process writing 64 KiB every 10 ms moves about 6.4 MB/s; an idle one moves none."""
    msg = live.metric_for(Slo("completion_time", "min", None, "s", "r"))
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "with open(sys.argv[1], 'wb', buffering=0) as fh:\n"
                "    while True:\n"
                "        fh.write(b'x' * 65536); fh.seek(0); time.sleep(0.01)\n"
            ),
            str(tmp_path / "sink"),
        ]
    )
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.5)
        busy = live.measure(Target(pid=writer.pid), msg, 1.0)
        quiet = live.measure(Target(pid=idle.pid), msg, 1.0)
    finally:
        for proc in (writer, idle):
            proc.kill()
            proc.wait()
    assert 1e6 < busy.value < 2e7, busy.value
    assert quiet.value < 1e4, quiet.value
