"""Issue 17: the host's cgroup CPU controls decide where a whole-system policy may run.

The cgroup filesystem is a tmp tree (``cgroupfs.CGROUP_ROOT``); the kernel side of the
engine (the compiled object, attach, guard, thread switching) is faked, never the
scan or the decision under test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schedagent.errors import ConfigError, HostControlsUnsupported
from schedagent.execution import engine, hostcontrols
from schedagent.kernel import cgroupfs, partial, scx
from schedagent.kernel.cgroupfs import CgroupControl, ControlScan, scan_controls
from schedagent.kernel.guard import RollbackReport
from schedagent.models import Target
from schedagent.policy.repo import POLICIES_DIR, PolicyMeta, PolicySource, builtin_names, load_meta
from schedagent.store import Store

SECRET = "root:$6$SECRET-HASH-issue17$:19000:0:99999:7:::"


def _cgroup(
    root: Path, path: str, cpu_max: str = "max 100000", weight: str = "100", populated: int = 1
) -> Path:
    d = root / path
    d.mkdir(parents=True)
    (d / "cpu.max").write_text(cpu_max + "\n")
    (d / "cpu.weight").write_text(weight + "\n")
    (d / "cgroup.events").write_text(f"populated {populated}\nfrozen 0\n")
    return d


@pytest.fixture
def cgroot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    monkeypatch.setattr(cgroupfs, "CGROUP_ROOT", root)
    return root


# --- the scan -------------------------------------------------------------------------------


def test_scan_finds_populated_cgroups_with_a_limit_or_a_weight(cgroot: Path) -> None:
    _cgroup(cgroot, "limited", cpu_max="50000 100000")
    _cgroup(cgroot, "web.slice/heavy", weight="400")
    _cgroup(cgroot, "web.slice/idle-weighted", weight="400", populated=0)
    _cgroup(cgroot, "plain")
    (cgroot / "no-cpu-controller" / "deep").mkdir(parents=True)
    _cgroup(cgroot, "no-cpu-controller/deep/both", cpu_max="20000 100000", weight="50")
    scan = scan_controls()
    found = {c.cgroup: c for c in scan.controls}
    assert set(found) == {"limited", "web.slice/heavy", "no-cpu-controller/deep/both"}
    assert found["limited"] == CgroupControl("limited", 50000, 100000, 100)
    assert found["limited"].needs == {"bandwidth"}
    assert found["web.slice/heavy"].needs == {"weight"}
    assert found["no-cpu-controller/deep/both"].needs == {"weight", "bandwidth"}
    assert found["limited"].describe() == "cgroup 'limited' has cpu.max 50000 100000"
    assert not scan.truncated and scan.scanned == 9  # the root and eight below it


def test_scan_follows_no_symlink_and_never_reports_file_contents(
    cgroot: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    _cgroup(elsewhere, "outside", cpu_max="1000 100000")
    (cgroot / "escape").symlink_to(elsewhere)
    bad = _cgroup(cgroot, "garbled")
    (bad / "cpu.max").unlink()
    (bad / "cpu.max").symlink_to(tmp_path / "shadow")
    (tmp_path / "shadow").write_text(SECRET)
    odd = _cgroup(cgroot, "odd", weight="400")
    (odd / "cpu.max").write_text(SECRET)
    assert scan_controls().controls == ()


def test_scan_is_bounded_and_says_so(cgroot: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        _cgroup(cgroot, f"c{i}", weight="400")
    monkeypatch.setattr(cgroupfs, "MAX_SCAN_CGROUPS", 3)
    scan = scan_controls()
    assert scan.truncated and scan.scanned == 3 and len(scan.controls) == 2
    monkeypatch.setattr(cgroupfs, "MAX_SCAN_CGROUPS", 100)
    _cgroup(cgroot, "a/b/c/d", weight="400")
    monkeypatch.setattr(cgroupfs, "MAX_SCAN_DEPTH", 3)
    scan = scan_controls()
    assert scan.truncated and "a/b/c/d" not in {c.cgroup for c in scan.controls}


def test_an_unreadable_directory_makes_the_walk_incomplete(
    cgroot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subtree the walk cannot list may hold any control: the scan says it is
    incomplete (and ``place`` then fails closed), as for the count limit."""
    for i in range(3):
        _cgroup(cgroot, f"c{i}", weight="400")
    real, calls = os.scandir, []

    def refuse_second(fd: object) -> object:
        calls.append(fd)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied")
        return real(fd)  # type: ignore[call-overload]

    monkeypatch.setattr(cgroupfs.os, "scandir", refuse_second)
    assert scan_controls().truncated
    monkeypatch.setattr(cgroupfs.os, "scandir", real)
    assert not scan_controls().truncated

    def no_root(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cgroupfs.os, "open", no_root)
    assert scan_controls().truncated


def test_no_cgroup_v2_mount_means_nothing_to_respect(tmp_path: Path) -> None:
    assert scan_controls(tmp_path / "absent") == ControlScan((), 0)


# --- the YAML declaration -------------------------------------------------------------------


def test_policy_yaml_declares_cgroup_support_and_unknown_kinds_are_refused(
    tmp_path: Path,
) -> None:
    base = "name: demo\nsummary: s\nintent: i\n"
    good = tmp_path / "good.yaml"
    good.write_text(base + "cgroup: [weight, bandwidth]\n")
    assert load_meta(good).cgroup == ["weight", "bandwidth"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "cgroup: [memory]\n")
    with pytest.raises(ConfigError, match="cgroup") as err:
        load_meta(bad)
    assert "weight" in str(err.value) and "bandwidth" in str(err.value)


_OPS_FOR = {"weight": ".cgroup_set_weight", "bandwidth": ".cgroup_set_bandwidth"}


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_policy_declares_exactly_the_cgroup_ops_it_sets(name: str) -> None:
    meta = load_meta(POLICIES_DIR / name / "policy.yaml")
    source = (POLICIES_DIR / name / f"{name}.bpf.c").read_text()
    ops = source[source.index("struct sched_ext_ops") :]
    for kind, member in _OPS_FOR.items():
        sets = re.search(re.escape(member) + r"\s*=", ops) is not None
        assert sets == (kind in meta.cgroup), (name, kind)
        if sets:
            assert re.search(r"\.cgroup_init\s*=", ops), name
    assert (name == "vtime") <= ("weight" in meta.cgroup)  # issue 17: vtime honours cpu.weight


# --- the decision ---------------------------------------------------------------------------


def _policy(cgroup: list[str], source: Path = Path("demo.bpf.c")) -> PolicySource:
    meta = PolicyMeta.model_validate(
        {"name": "demo", "summary": "s", "intent": "i", "cgroup": cgroup}
    )
    return PolicySource(name="demo", source=source, meta=meta)


WEIGHTED = CgroupControl("web/heavy", None, 100000, 400)
LIMITED = CgroupControl("batch", 50000, 100000, 100)
WEIGHT_OPS = ("cgroup_init", "cgroup_set_weight", "enqueue")


def test_a_policy_honouring_every_control_runs_on_the_whole_system() -> None:
    scan = ControlScan((WEIGHTED,), 3)
    assert not hostcontrols.place(_policy(["weight"]), WEIGHT_OPS, scan, False).confined
    assert not hostcontrols.place(_policy([]), (), ControlScan((), 3), False).confined


def test_a_declaration_the_object_does_not_implement_does_not_count() -> None:
    policy = _policy(["weight"])
    assert hostcontrols.supported(policy, ("cgroup_init", "enqueue")) == frozenset()
    with pytest.raises(HostControlsUnsupported) as err:
        hostcontrols.place(policy, ("cgroup_init",), ControlScan((WEIGHTED,), 3), False)
    assert err.value.needed == ["weight"] and err.value.supported == []


def test_without_a_target_an_unhonoured_limit_is_refused_with_the_facts() -> None:
    with pytest.raises(HostControlsUnsupported) as err:
        hostcontrols.place(
            _policy(["weight"]), WEIGHT_OPS, ControlScan((WEIGHTED, LIMITED), 3), False
        )
    text = str(err.value)
    assert "cgroup 'batch' has cpu.max 50000 100000" in text and "web/heavy" not in text
    assert err.value.needed == ["bandwidth"] and err.value.supported == ["weight"]
    assert "Fix:" in text and "partial mode" in text and err.value.exit_code == 32


def test_with_a_target_an_unhonoured_control_confines_it_to_partial_mode() -> None:
    placement = hostcontrols.place(_policy([]), (), ControlScan((WEIGHTED, LIMITED), 3), True)
    assert placement.confined
    assert placement.note.startswith("confined to partial mode: cgroup 'web/heavy' has ")
    assert "cpu.max 50000 100000" in placement.note
    assert "demo does not declare and implement cgroup bandwidth and weight support" in (
        placement.note
    )


def test_a_truncated_walk_counts_the_unread_cgroups_as_controlled() -> None:
    """Past the walk's limit any cgroup may be limited: only a policy honouring both
    controls runs on every task there; the others are confined or refused."""
    cut = ControlScan((), 20000, truncated=True)
    with pytest.raises(HostControlsUnsupported) as err:
        hostcontrols.place(_policy(["weight"]), WEIGHT_OPS, cut, False)
    assert err.value.needed == ["bandwidth"]
    assert "the cgroup walk read 20000 cgroups and not the rest" in str(err.value)
    placement = hostcontrols.place(_policy([]), (), cut, True)
    assert placement.confined and "so their controls are unknown" in placement.note
    both = ("cgroup_init", "cgroup_set_weight", "cgroup_set_bandwidth")
    assert not hostcontrols.place(_policy(["weight", "bandwidth"]), both, cut, False).confined
    # a walk that read everything and found nothing leaves the policy alone
    assert not hostcontrols.place(_policy([]), (), ControlScan((), 20000), False).confined


# --- the engine, with the kernel faked ------------------------------------------------------


class _FakeObj:
    loaded = True

    def __init__(self) -> None:
        self.closed = False

    def maps(self) -> dict[str, Any]:
        return {}

    def percpu_stats(self) -> list[int]:
        return []

    def close(self) -> None:
        self.closed = True


class _FakeSched:
    name, enable_seq = "demo", 9

    def detach(self, timeout_s: float = 0) -> None:
        pass


class _FakeGuard:
    event = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def start(self) -> _FakeGuard:
        return self

    def stop(self) -> None:
        pass


@pytest.fixture
def sleeper() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The engine's kernel-facing steps, recording what it asked for."""
    seen: dict[str, Any] = {"obj": _FakeObj(), "switched": []}
    source = tmp_path / "demo.bpf.c"
    source.write_text("/* the source is only hashed */\n")
    prepared = engine.Prepared(
        _policy(["weight"], source),
        None,  # type: ignore[arg-type]  # the gate report is not read after _prepare
        None,  # type: ignore[arg-type]  # nor the build
        seen["obj"],
        {},
        WEIGHT_OPS,
    )

    def attach(obj: Any, options: Any, fill: Any) -> _FakeSched:
        seen["partial"] = options.partial
        return _FakeSched()

    def switch(planned: list[partial.SwitchedTask]) -> list[partial.SwitchedTask]:
        seen["switched"] = [t.tid for t in planned]
        return planned

    monkeypatch.setattr(
        engine, "_require_sched_ext", lambda: scx.ScxState(True, "disabled", None, 8, False, 0)
    )
    monkeypatch.setattr(engine, "_prepare", lambda *a: prepared)
    monkeypatch.setattr(engine, "attach", attach)
    monkeypatch.setattr(engine, "Guard", _FakeGuard)
    monkeypatch.setattr(engine, "rollback", lambda sched: RollbackReport())
    monkeypatch.setattr(engine, "KmsgReader", lambda: type("K", (), {"close": lambda s: None})())
    monkeypatch.setattr(partial, "switch_to_ext", switch)
    monkeypatch.setattr(partial, "restore", lambda tasks: len(tasks))
    return seen


def test_engine_confines_a_targeted_whole_system_run_on_a_limited_host(
    cgroot: Path, fake_kernel: dict[str, Any], sleeper: int, tmp_path: Path
) -> None:
    _cgroup(cgroot, "batch", cpu_max="50000 100000")
    store = Store(tmp_path / "s.db")
    try:
        req = engine.RunRequest("vtime", {}, Target(pid=sleeper), switch_all=True)
        with engine.session(req, store) as sess:
            outcome = sess.outcome
        loaded = next(e for e in store.events() if e.kind == "loaded")
    finally:
        store.close()
    assert fake_kernel["partial"] is True and fake_kernel["switched"] == [sleeper]
    assert outcome.switched_threads == 1
    assert "confined to partial mode: cgroup 'batch' has cpu.max 50000 100000" in outcome.confined
    assert loaded.detail["confined"] == outcome.confined


def test_engine_refuses_an_untargeted_whole_system_run_before_attach(
    cgroot: Path, fake_kernel: dict[str, Any], tmp_path: Path
) -> None:
    _cgroup(cgroot, "batch", cpu_max="50000 100000")
    store = Store(tmp_path / "s.db")
    try:
        with (
            pytest.raises(HostControlsUnsupported, match="'batch' has cpu.max 50000 100000"),
            engine.session(engine.RunRequest("vtime", {}), store),
        ):
            raise AssertionError("the session must not start")
        kinds = [e.kind for e in store.events()]
    finally:
        store.close()
    assert "partial" not in fake_kernel and fake_kernel["obj"].closed
    assert kinds == ["refused"]


def test_engine_runs_a_weight_policy_on_the_whole_system_of_a_weighted_host(
    cgroot: Path, fake_kernel: dict[str, Any], tmp_path: Path
) -> None:
    _cgroup(cgroot, "web/heavy", weight="400")
    store = Store(tmp_path / "s.db")
    try:
        with engine.session(engine.RunRequest("vtime", {}), store) as sess:
            assert sess.outcome.confined == ""
    finally:
        store.close()
    assert fake_kernel["partial"] is False and fake_kernel["switched"] == []
    assert os.path.exists(cgroot / "web" / "heavy" / "cpu.weight")
