"""The testbed runner's pure parts: shares, guest script, cache key, host tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedagent.errors import ToolMissing
from schedagent.sandbox import hosttools, image, runner


def test_shares_put_the_run_dir_first_and_skip_nested(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDAGENT_CACHE_DIR", str(tmp_path / "cache"))
    rundir = tmp_path / "run"
    spec = runner.VmSpec(cwd=runner.PROJECT_ROOT / "tests")
    shares = runner._shares(spec, rundir)
    assert shares[0] == rundir
    assert runner.PROJECT_ROOT in shares
    assert runner.PROJECT_ROOT / "tests" not in shares  # inside the checkout already


def test_guest_script_binds_shares_at_host_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDAGENT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SCHEDAGENT_REQUIRE_VM", "1")
    spec = runner.VmSpec(cwd=runner.PROJECT_ROOT)
    shares = runner._shares(spec, tmp_path / "run")
    script = runner._env_script(spec, shares)
    assert f"mount --bind {image.share_mount(1)} {shares[1]}" in script
    assert "export SCHEDAGENT_REQUIRE_VM=1" in script
    assert f"cd {runner.PROJECT_ROOT}" in script


def test_image_key_follows_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image.image_key()
    monkeypatch.setattr(image, "GUEST_PACKAGES", image.GUEST_PACKAGES + ("htop",))
    assert image.image_key() != before


def test_missing_host_tool_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosttools.shutil, "which", lambda _name: None)
    monkeypatch.setattr(hosttools.sys, "executable", "/nonexistent/python")
    with pytest.raises(ToolMissing) as caught:
        hosttools.require(hosttools.BOOT_TOOLS)
    assert caught.value.tool == "qemu-system-x86_64"
    assert "apt-get install -y qemu-system-x86" in str(caught.value)


def test_empty_command_is_refused() -> None:
    from schedagent.errors import SandboxError

    with pytest.raises(SandboxError, match="no command"):
        runner.run([], runner.VmSpec())


def test_hung_guest_is_killed_at_the_timeout(tmp_path: Path) -> None:
    import subprocess
    import time

    from schedagent.errors import SandboxTimeout

    (tmp_path / "console.log").write_text("booting...\nstuck here\n")
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    started = time.monotonic()
    with pytest.raises(SandboxTimeout) as caught:
        runner._follow(proc, tmp_path, 0.5, started, quiet=True, progress=print)
    assert proc.poll() is not None  # the "guest" was killed
    assert "stuck here" in caught.value.tail


def test_two_boots_in_one_second_get_their_own_run_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: on a fresh cache the failed KVM probe and the real boot came in the same
    second from one process, and the second run directory already existed."""
    monkeypatch.setenv("SCHEDAGENT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(runner.time, "strftime", lambda fmt: "20261130-084338")
    first, second = runner._new_rundir(), runner._new_rundir()
    assert first != second and first.is_dir() and second.is_dir()
