"""CPU topology from sysfs: which CPUs share a last-level cache."""

from __future__ import annotations

import os
from pathlib import Path

CPU_SYSFS = Path("/sys/devices/system/cpu")


def llc_ids(root: Path = CPU_SYSFS) -> dict[int, int]:
    """CPU number -> id of its last-level cache (0 where sysfs does not say)."""
    out: dict[int, int] = {}
    for cpu in range(os.cpu_count() or 1):
        cache = root / f"cpu{cpu}" / "cache"
        best_level, best_id = -1, 0
        for index in sorted(cache.glob("index*")):
            try:
                level = int((index / "level").read_text())
                cache_id = int((index / "id").read_text())
            except (OSError, ValueError):
                continue
            if level > best_level:
                best_level, best_id = level, cache_id
        out[cpu] = best_id
    return out
