"""Issue 13: a small run of scripts/verdict-sim.py: the decision code, driven at the
product's real regimes, keeps a policy no better than EEVDF at most 5% of the time."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from schedagent.config import PROJECT_ROOT


def _sim() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "verdict_sim", PROJECT_ROOT / "scripts" / "verdict-sim.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["verdict_sim"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_false_keeps_stay_under_five_percent_at_tunes_defaults() -> None:
    rows = _sim().simulate(
        100, seed=13, names=["tune CLI defaults", "daemon defaults"], noises=["heavy"]
    )
    assert len(rows) == 2
    for row in rows:
        # at the 5% goal, 100 trials would see 5 false keeps on average; the rule's own
        # rate is about 1-2%, so more than 5 means the rule lost its control
        assert float(row["false_keep"]) * 100 <= 5, row
        assert float(row["power_1.3x"]) >= 0.2, row  # and it can still keep a real gain
