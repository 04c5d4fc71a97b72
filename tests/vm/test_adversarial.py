"""Issue 12: the adversarial corpus through the public path on a real sched_ext kernel.

Each file of tests/adversarial goes through ``schedagent policies verify FILE --json``
in the guest (the real vmlinux.h, clang, libbpf headers and kernel BTF) and must be
refused with its declared exit code and a reason naming what was found; the honest
scheduler must verify and then really load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schedagent.execution import engine
from schedagent.kernel import scx
from schedagent.store import Store
from tests.adversarial.corpus import Case, cases
from tests.vm.conftest import cli

pytestmark = pytest.mark.vm

CASES = cases()
HONEST = next(c for c in CASES if c.name == "honest")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_corpus_file_gets_its_documented_verdict(case: Case, tmp_path: Path) -> None:
    # the macro bomb runs until a compile limit trips (at most the 180 s wall clock)
    proc = cli(
        "policies",
        "verify",
        str(case.path),
        "--json",
        env={"SCHEDAGENT_STATE_DIR": str(tmp_path)},
        timeout=900,
    )
    assert proc.returncode == case.exit_code, (proc.stdout[-2000:], proc.stderr[-2000:])
    data = json.loads(proc.stdout)
    if case.exit_code == 0:
        assert data["ok"] is True and "object check" in data["gates"]
        return
    message = data["error"]["message"]
    assert case.reason in message, message
    assert "root:" not in proc.stdout + proc.stderr  # nothing of /etc/shadow comes back
    assert scx.read_state().state == "disabled"


def test_honest_scheduler_loads_and_is_enabled(store: Store) -> None:
    seen: dict[str, object] = {}

    def check(outcome: engine.RunOutcome) -> None:
        snap = scx.read_state()
        seen["state"] = Path("/sys/kernel/sched_ext/state").read_text().strip()
        seen["ops"] = snap.ops

    outcome = engine.run_policy(
        engine.RunRequest(str(HONEST.path), {}, duration_s=1.0), store, check
    )
    assert seen == {"state": "enabled", "ops": "honest"}
    assert outcome.final_state == "disabled" and outcome.reason == "duration"
