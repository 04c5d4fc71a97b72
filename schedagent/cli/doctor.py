"""``schedagent doctor``: what this machine can do, with a fix for each gap."""

from __future__ import annotations

from schedagent.cli.common import JsonOpt, client
from schedagent.cli.output import emit_json, fail


def doctor(json_out: JsonOpt = False) -> None:
    """Report sched_ext, BTF, clang/bpftool/libbpf, bcc, root, KVM and the testbed image."""
    try:
        report = client(json_out).call("doctor", {})
    except Exception as err:  # noqa: BLE001  (CLI entry: mapped to a message and exit code)
        fail(err, json_out)
    if json_out:
        emit_json(report)
        return
    where = "testbed guest" if report["in_testbed"] else "host"
    print(f"schedagent doctor ({where}, kernel {report['kernel']})")
    for name, check in report["checks"].items():
        mark = "ok " if check["ok"] else "-- "
        print(f"  {mark} {name:<10} {check['detail']}")
        if not check["ok"] and check["fix"]:
            print(f"  {'':14}fix: {check['fix']}")
    verdict = (
        "ready to load sched_ext schedulers"
        if report["sched_ext_ready"]
        else ("cannot load schedulers here; see the fixes above")
    )
    print(f"  => {verdict}")
