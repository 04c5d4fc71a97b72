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
                item.add_marker(pytest.mark.skip(
                    reason="needs sched_ext: run `schedagent sandbox run -- pytest -m vm`"))


# --- resuming a VM run after the guest kernel died ------------------------------------
# With SCHEDAGENT_VM_JOURNAL=path, each finished test appends "outcome nodeid" to the file,
# and tests already in it are deselected. scripts/run-vm-tests.sh boots again after a
# guest crash and so runs only what had not finished; it fails if any line says failed.


def _journal() -> Path | None:
    path = os.environ.get("SCHEDAGENT_VM_JOURNAL")
    return Path(path) if path else None


def _drop_finished(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests a previous boot already finished."""
    journal = _journal()
    if journal is None or not journal.exists():
        return
    done = {line.split(" ", 1)[1] for line in journal.read_text().splitlines() if " " in line}
    keep = [i for i in items if i.nodeid not in done]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid in done])
        items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    journal = _journal()
    if journal is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        with journal.open("a") as f:
            f.write(f"{report.outcome} {report.nodeid}\n")
            f.flush()
            os.fsync(f.fileno())
