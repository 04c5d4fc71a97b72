"""Issue 13: scripts/run-vm-tests.sh passes only when every collected VM test passed.

A fake ``.venv/bin/schedagent`` plays the sandbox: each boot appends journal lines the way
tests/conftest.py does and exits with the code a real boot would."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from schedagent.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "run-vm-tests.sh"


def _run(tmp_path: Path, boots: list[tuple[list[str], int]]) -> tuple[int, str]:
    """Each boot: the journal lines it writes and its exit code."""
    fake = tmp_path / ".venv" / "bin" / "schedagent"
    fake.parent.mkdir(parents=True)
    cases = "\n".join(
        f"  {i}) printf '%s' '{''.join(line + chr(10) for line in lines)}' >> "
        f'"$SCHEDAGENT_VM_JOURNAL"; exit {rc} ;;'
        for i, (lines, rc) in enumerate(boots, 1)
    )
    fake.write_text(
        "#!/bin/sh\nn=$(( $(cat boots 2>/dev/null || echo 0) + 1 ))\n"
        "echo $n > boots\ncase $n in\n" + cases + "\n  *) exit 99 ;;\nesac\n"
    )
    fake.chmod(0o755)
    out = subprocess.run(
        ["sh", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    return out.returncode, out.stdout + out.stderr


def _ok(name: str) -> list[str]:
    return [f"started {name}", f"passed {name}"]


def test_all_collected_tests_passed_is_success(tmp_path: Path) -> None:
    rc, out = _run(tmp_path, [(["collected 2", *_ok("a"), *_ok("b")], 0)])
    assert rc == 0, out


@pytest.mark.parametrize("rc_pytest", [0, 5])
def test_nothing_collected_or_an_empty_journal_fails(tmp_path: Path, rc_pytest: int) -> None:
    rc, out = _run(tmp_path, [([], rc_pytest)])
    assert rc == 1 and "no VM test was collected" in out


def test_fewer_finished_than_collected_fails(tmp_path: Path) -> None:
    rc, out = _run(tmp_path, [(["collected 3", *_ok("a"), *_ok("b")], 0)])
    assert rc == 1 and "only 2 of 3" in out


def test_a_teardown_error_after_a_pass_fails(tmp_path: Path) -> None:
    rc, out = _run(tmp_path, [(["collected 1", *_ok("a"), "error a"], 1)])
    assert rc == 1 and "error a" in out


def test_a_skip_is_not_a_pass(tmp_path: Path) -> None:
    rc, _ = _run(tmp_path, [(["collected 2", *_ok("a"), "started b", "skipped b"], 0)])
    assert rc == 1


def test_the_test_running_when_the_guest_died_is_failed_not_retried(tmp_path: Path) -> None:
    # boot 1 dies in b; boot 2 runs only c (b is journalled failed, so deselected)
    rc, out = _run(tmp_path, [(["collected 3", *_ok("a"), "started b"], 4), (_ok("c"), 0)])
    assert rc == 1 and "b was running when the guest stopped" in out
    journal = (tmp_path / "out" / "vm-journal.txt").read_text().splitlines()
    assert "failed b" in journal and journal.count("started b") == 1


def test_a_hang_has_its_own_exit_code_and_is_not_retried(tmp_path: Path) -> None:
    rc, out = _run(tmp_path, [(["collected 2", *_ok("a"), "started b"], 7), (_ok("b"), 0)])
    assert rc == 7 and "hung" in out
    assert (tmp_path / "boots").read_text().strip() == "1"
