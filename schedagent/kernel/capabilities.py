"""What this machine can do: the facts behind ``schedagent doctor``."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from schedagent.errors import SchedagentError
from schedagent.kernel import btf, libbpf, observer, scx, toolchain


@dataclass(frozen=True, slots=True)
class Check:
    """One capability: whether it is there, what was seen, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def _version_of(cmd: list[str], pattern: str) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(pattern, out)
    return match.group(1) if match else out.strip().splitlines()[0] if out.strip() else None


def check_sched_ext() -> Check:
    """sched_ext present, and its current state."""
    snap = scx.read_state()
    if not snap.present:
        return Check(
            "sched_ext",
            False,
            f"absent: {scx.SCX_ROOT} does not exist (kernel {os.uname().release})",
            "boot a kernel >= 6.12 with CONFIG_SCHED_CLASS_EXT=y, or use the testbed: "
            "schedagent sandbox run -- CMD",
        )
    ops = f", root/ops={snap.ops}" if snap.ops else ""
    return Check(
        "sched_ext", True, f"present, state={snap.state}{ops}, enable_seq={snap.enable_seq}"
    )


def check_btf() -> Check:
    """Kernel BTF, needed for vmlinux.h and kfunc detection."""
    try:
        index = btf.load()
    except SchedagentError as err:
        return Check(
            "btf", False, str(err).split(". Fix:")[0], "boot a kernel with CONFIG_DEBUG_INFO_BTF=y"
        )
    except ValueError as err:
        return Check("btf", False, f"unreadable: {err}", "report this kernel's BTF format")
    scx_funcs = sorted(f for f in index.funcs if f.startswith("scx_bpf_"))
    return Check(
        "btf",
        True,
        f"{btf.VMLINUX_BTF} ({len(index.funcs)} functions, {len(scx_funcs)} scx_bpf_* kfuncs)",
    )


def check_clang() -> Check:
    """clang with the BPF target."""
    ver = _version_of(["clang", "--version"], r"clang version (\S+)")
    if ver is None:
        return Check("clang", False, "not found", "apt-get install clang llvm")
    return Check("clang", True, ver)


def check_bpftool() -> Check:
    """bpftool, for vmlinux.h."""
    ver = _version_of(["bpftool", "version"], r"bpftool v(\S+)")
    if ver is None:
        return Check("bpftool", False, "not found", "apt-get install bpftool")
    return Check("bpftool", True, ver)


def check_libbpf() -> Check:
    """libbpf >= 1.2, loaded through ctypes."""
    try:
        return Check("libbpf", True, libbpf.version())
    except SchedagentError as err:
        return Check(
            "libbpf",
            False,
            str(err).split(". Fix:")[0],
            "apt-get install libbpf1 (1.2 or newer; Debian 13 or unstable)",
        )


def check_bcc() -> Check:
    """bcc's Python module, for the deep probes."""
    if importlib.util.find_spec("bcc") is None:
        return Check(
            "bcc",
            False,
            "python module 'bcc' not importable",
            "apt-get install python3-bpfcc and use a venv with "
            "--system-site-packages (the testbed's venv has it)",
        )
    return Check("bcc", True, "python module 'bcc' importable")


def check_root() -> Check:
    """Root privileges, needed to load schedulers."""
    uid = os.geteuid()
    if uid != 0:
        return Check(
            "root", False, f"running as uid {uid}", "run with sudo, or talk to the daemon's socket"
        )
    return Check("root", True, "uid 0")


def check_observer() -> Check:
    """The always-on observer compiles, passes the verifier and attaches here (a
    separate instance, detached at once: this process's own is left alone)."""
    if os.environ.get(observer.OFF_ENV, "").lower() in ("off", "0", "no", "false"):
        return Check("observer", True, f"switched off ({observer.OFF_ENV}); windows poll procfs")
    try:
        probe = observer.Observer(toolchain.compile_observer().path)
    except (SchedagentError, OSError) as err:
        return Check(
            "observer",
            False,
            f"not available: {str(err).splitlines()[0][:300]}; windows poll procfs instead",
            "run as root on a kernel with BTF, with clang and libbpf-dev installed",
        )
    probe.close()
    return Check("observer", True, "BPF observer compiled, verified and attached")


def all_checks() -> list[Check]:
    """Every kernel/toolchain check (the testbed checks are added by the caller)."""
    return [
        check_sched_ext(),
        check_btf(),
        check_clang(),
        check_bpftool(),
        check_libbpf(),
        check_bcc(),
        check_observer(),
        check_root(),
    ]
