"""Issue 2: the testbed boots a real sched_ext kernel and a minimal scheduler runs on it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from schedagent.kernel import scx, toolchain
from schedagent.kernel.loader import BpfObject, LoadOptions, attach
from tests.vm.conftest import FIXTURES, cli


def test_sched_ext_is_disabled_at_boot() -> None:
    snap = scx.read_state()
    assert Path("/sys/kernel/sched_ext/state").read_text().strip() == "disabled"
    assert snap.ops is None and not snap.switch_all


def test_minimal_scheduler_compiles_against_guest_vmlinux_h() -> None:
    header = toolchain.vmlinux_header()
    assert "struct sched_ext_ops {" in header.read_text()
    built = toolchain.compile_source(FIXTURES / "minimal.bpf.c")
    data = built.path.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert b".struct_ops.link" in data


def test_minimal_scheduler_attaches_runs_work_and_detaches() -> None:
    built = toolchain.compile_source(FIXTURES / "minimal.bpf.c")
    obj = BpfObject(built.path, "minimal")
    try:
        sched = attach(obj, LoadOptions({"slice_ns": 3_000_000}))
        assert Path("/sys/kernel/sched_ext/state").read_text().strip() == "enabled"
        assert Path("/sys/kernel/sched_ext/root/ops").read_text().strip() == "minimal"
        assert obj.read_var(".rodata", "slice_ns") == (3_000_000).to_bytes(8, "little")
        subprocess.run(["stress-ng", "--cpu", "2", "--timeout", "2s", "-q"], check=True)
        enqueued, dispatched = obj.percpu_stats()[:2]
        assert enqueued > 0 and dispatched > 0
        after = sched.detach()
        assert after.state == "disabled"
        assert not Path("/sys/kernel/sched_ext/root/ops").exists()
        info = obj.exit_info()
        assert info is not None and info.kind == 64, info  # SCX_EXIT_UNREG
    finally:
        obj.close()


def test_doctor_json_in_guest_reports_sched_ext() -> None:
    proc = cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["in_testbed"] is True
    assert data["checks"]["sched_ext"]["ok"] is True
    assert data["checks"]["libbpf"]["ok"] is True
    assert data["sched_ext_ready"] is True
