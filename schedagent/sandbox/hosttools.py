"""Host tools the testbed needs, and how to install each one."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from schedagent.errors import ToolMissing


@dataclass(frozen=True, slots=True)
class HostTool:
    """One executable the testbed needs on the host."""

    command: str
    purpose: str
    fix: str


MMDEBSTRAP = HostTool("mmdebstrap", "build the guest root", "apt-get install -y mmdebstrap")
QEMU = HostTool("qemu-system-x86_64", "boot the guest kernel", "apt-get install -y qemu-system-x86")
BUSYBOX = HostTool(
    "busybox", "build the guest initramfs (virtme-ng)", "apt-get install -y busybox-static"
)
STRINGS = HostTool("strings", "read the guest kernel version", "apt-get install -y binutils")
FILE = HostTool("file", "identify the guest kernel image", "apt-get install -y file")
MODPROBE = HostTool(
    "modprobe", "resolve guest kernel modules (virtme-ng)", "apt-get install -y kmod"
)
VNG = HostTool("vng", "boot the guest (virtme-ng)", "pip install virtme-ng  (or: make venv)")

MKFS = HostTool("mkfs.ext4", "write the guest disk image", "apt-get install -y e2fsprogs")

ZSTD = HostTool(
    "zstd", "unpack the guest kernel to read its BTF (prebuild)", "apt-get install -y zstd"
)
BUILD_TOOLS = (MMDEBSTRAP, MKFS, ZSTD)
BOOT_TOOLS = (QEMU, BUSYBOX, STRINGS, FILE, MODPROBE, VNG)


def which(tool: HostTool) -> str | None:
    """Return the tool's path, looking next to this Python too (for a venv's vng)."""
    found = shutil.which(tool.command)
    if found:
        return found
    beside = Path(sys.executable).parent / tool.command
    return str(beside) if beside.exists() else None


def require(tools: tuple[HostTool, ...]) -> dict[str, str]:
    """Return each tool's path, or raise ToolMissing for the first one absent."""
    paths: dict[str, str] = {}
    for tool in tools:
        path = which(tool)
        if path is None:
            raise ToolMissing(tool.command, tool.purpose, tool.fix)
        paths[tool.command] = path
    return paths
