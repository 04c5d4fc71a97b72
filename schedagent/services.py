"""Operations shared by every front end: the CLI, the daemon socket and MCP.

A behaviour that exists in only one front end is a bug, so the front ends call
these functions and only adapt arguments and output.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from schedagent.config import cache_dir
from schedagent.kernel import capabilities
from schedagent.kernel.capabilities import Check


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """What this machine can do."""

    in_testbed: bool
    kernel: str
    checks: list[Check]

    @property
    def sched_ext_ready(self) -> bool:
        """Whether schedulers can be loaded here right now."""
        needed = {"sched_ext", "btf", "clang", "bpftool", "libbpf", "root"}
        return all(c.ok for c in self.checks if c.name in needed)


def doctor() -> DoctorReport:
    """Check sched_ext, BTF, the toolchain, bcc, root, KVM and the testbed image."""
    checks = capabilities.all_checks()
    checks.append(_check_kvm())
    checks.append(_check_testbed())
    return DoctorReport(os.environ.get("SCHEDAGENT_IN_TESTBED") == "1", os.uname().release,
                        checks)


def _check_kvm() -> Check:
    if not os.path.exists("/dev/kvm"):
        return Check("kvm", False, "/dev/kvm does not exist; the testbed uses TCG emulation",
                     "enable virtualisation in firmware/hypervisor for faster testbed boots")
    try:
        probe = json.loads((cache_dir() / "kvm-probe.json").read_text())
    except (OSError, ValueError):
        return Check("kvm", True, "/dev/kvm exists, not probed yet (the first "
                     "`schedagent sandbox run` probes it)")
    if probe.get("kvm"):
        return Check("kvm", True, "probe boot succeeded with KVM")
    return Check("kvm", False, "/dev/kvm exists but a probe boot failed; the testbed "
                 "falls back to TCG emulation", "nothing to do (boots are just slower)")


def _check_testbed() -> Check:
    from schedagent.sandbox.image import find_image, image_key

    img = find_image()
    if img is None:
        return Check("testbed", False, f"no image for key {image_key()}",
                     "schedagent sandbox build")
    return Check("testbed", True, f"image {img.key} with kernel {img.kernel_release} at "
                 f"{img.root}")
