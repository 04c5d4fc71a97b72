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
    for item in items:
        if VM_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vm)
            if not has_scx and not required:
                item.add_marker(pytest.mark.skip(
                    reason="needs sched_ext: run `schedagent sandbox run -- pytest -m vm`"))
