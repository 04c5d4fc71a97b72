"""Shared test configuration: VM tests need a real sched_ext kernel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

VM_DIR = Path(__file__).parent / "vm"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/vm as ``vm``; skip or fail it without sched_ext."""
    has_scx = Path("/sys/kernel/sched_ext/state").exists()
    required = os.environ.get("SCHEDAGENT_REQUIRE_VM") == "1"
    _drop_finished(config, items)
    for item in items:
        if VM_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vm)
            if not has_scx and not required:
                item.add_marker(
                    pytest.mark.skip(
                        reason="needs sched_ext: run `schedagent sandbox run -- pytest -m vm`"
                    )
                )


# --- resuming a VM run after the guest kernel died ------------------------------------
# With SCHEDAGENT_VM_JOURNAL=path the journal records, one line each: "collected N" (the
# first boot's count), "started NODEID" before a test's setup, and "OUTCOME NODEID" for
# its result: the call's outcome, or "error" for a setup or teardown that failed. Tests
# with an outcome are deselected on the next boot. scripts/run-vm-tests.sh writes
# "failed NODEID" for a test that started and never finished (the guest died in it), and
# fails the run unless every collected test has exactly a "passed" outcome.

FINAL = ("passed", "failed", "skipped", "error")


def _journal() -> Path | None:
    path = os.environ.get("SCHEDAGENT_VM_JOURNAL")
    return Path(path) if path else None


def _append(journal: Path, line: str) -> None:
    with journal.open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _drop_finished(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Record what was collected (first boot), and deselect tests already finished."""
    journal = _journal()
    if journal is None:
        return
    lines = journal.read_text().splitlines() if journal.exists() else []
    if not any(line.startswith("collected ") for line in lines):
        _append(journal, f"collected {len(items)}")
    done = {
        line.split(" ", 1)[1] for line in lines if " " in line and line.split(" ", 1)[0] in FINAL
    }
    keep = [i for i in items if i.nodeid not in done]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid in done])
        items[:] = keep


def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    journal = _journal()
    if journal is not None:
        _append(journal, f"started {nodeid}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    journal = _journal()
    if journal is None:
        return
    if report.when == "call":
        _append(journal, f"{report.outcome} {report.nodeid}")
    elif report.when == "setup" and report.outcome == "skipped":
        _append(journal, f"skipped {report.nodeid}")
    elif report.outcome == "failed":  # a setup or teardown error
        _append(journal, f"error {report.nodeid}")
