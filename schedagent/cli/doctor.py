"""``schedagent doctor``: what this machine can do, with a fix for each gap."""

from __future__ import annotations

from typing import Annotated

import typer

from schedagent import services
from schedagent.cli.output import emit_json


def doctor(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Report sched_ext, BTF, clang/bpftool/libbpf, bcc, root, KVM and the testbed image."""
    report = services.doctor()
    if json_out:
        emit_json({"kernel": report.kernel, "in_testbed": report.in_testbed,
                   "sched_ext_ready": report.sched_ext_ready,
                   "checks": {c.name: {"ok": c.ok, "detail": c.detail, "fix": c.fix}
                              for c in report.checks}})
        return
    where = "testbed guest" if report.in_testbed else "host"
    print(f"schedagent doctor ({where}, kernel {report.kernel})")
    for check in report.checks:
        mark = "ok " if check.ok else "-- "
        print(f"  {mark} {check.name:<10} {check.detail}")
        if not check.ok and check.fix:
            print(f"  {'':14}fix: {check.fix}")
    verdict = "ready to load sched_ext schedulers" if report.sched_ext_ready else (
        "cannot load schedulers here; see the fixes above")
    print(f"  => {verdict}")
