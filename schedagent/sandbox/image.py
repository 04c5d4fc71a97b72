"""Build and cache the testbed's guest root filesystem.

The guest is a Debian unstable root made with mmdebstrap. It carries a kernel
with sched_ext, its headers, the BPF toolchain, bcc, the load generators and a
Python venv that holds schedagent's dependencies and can import Debian's bcc.

The root is cached under ``<cache>/testbed/<key>/root`` where ``key`` hashes the
package list and the Python requirements, so a rebuild happens only when one of
them changes. Never add a newer suite to the host's apt sources: everything new
lives inside this root only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schedagent.config import PROJECT_ROOT, cache_dir
from schedagent.errors import SandboxError
from schedagent.sandbox.hosttools import BUILD_TOOLS, require

log = logging.getLogger(__name__)

#: Debian packages installed into the guest. Changing this list changes the cache key.
GUEST_PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",
    "linux-headers-amd64",
    "clang",
    "llvm",
    "bpftool",
    "libbpf1",
    "libbpf-dev",
    "gcc",
    "libc6-dev",
    "make",
    "python3",
    "python3-venv",
    "python3-pip",
    "python3-bpfcc",
    "bpfcc-tools",
    "stress-ng",
    "rt-tests",
    "linux-perf",
    "sysbench",
    "procps",
    "kmod",
    "iproute2",
    "util-linux",
    "ca-certificates",
)

#: Python packages for the guest venv (schedagent's runtime and test deps).
GUEST_PYTHON_REQUIREMENTS: tuple[str, ...] = (
    "typer>=0.12",
    "psutil>=5.9",
    "pyyaml>=6.0",
    "pydantic>=2.7",
    "mcp>=1.20",
    "anthropic>=0.40",
    "pytest>=8",
    "pyelftools>=0.29",
)

#: Bump when the build recipe itself changes in a way that needs a rebuild.
RECIPE_VERSION = "3"

GUEST_VENV = "/opt/schedagent/venv"
_READY_MARK = ".schedagent-ready"
_DEBS_MARK = ".schedagent-debs"

Progress = Callable[[str], None]


#: Host directories are shared into the guest at these fixed mount points (they
#: must exist in the read-only disk image) and bind-mounted to their host paths
#: by the guest command script.
SHARE_SLOTS = 6


def share_mount(slot: int) -> str:
    """Guest mount point of share slot ``slot``."""
    return f"/mnt/schedagent-share{slot}"


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A built guest root, its ext4 disk image and the kernel inside it."""

    root: Path
    disk: Path
    kernel: Path
    kernel_release: str
    key: str


def image_key() -> str:
    """Hash of everything that decides the guest root's contents."""
    text = "\n".join(
        [RECIPE_VERSION, *sorted(GUEST_PACKAGES), "--", *sorted(GUEST_PYTHON_REQUIREMENTS)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_dir(key: str | None = None) -> Path:
    """Directory that holds (or will hold) the guest root for ``key``."""
    return cache_dir() / "testbed" / (key or image_key())


def find_image() -> GuestImage | None:
    """Return the cached image for the current package list, if it is complete."""
    key = image_key()
    root = image_dir(key) / "root"
    disk = image_dir(key) / "root.ext4"
    if not (root / _READY_MARK).exists() or not disk.exists():
        return None
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        return None
    kernel = kernels[-1]
    return GuestImage(root, disk, kernel, kernel.name.removeprefix("vmlinuz-"), key)


def build_image(force: bool = False, progress: Progress = print) -> GuestImage:
    """Build the guest root unless a complete one for this package list exists."""
    existing = None if force else find_image()
    if existing is not None:
        progress(f"testbed image {existing.key} is cached at {existing.root}")
        return existing
    tools = require(BUILD_TOOLS)
    if os.geteuid() != 0:
        raise SandboxError(
            "building the testbed needs root (mmdebstrap creates device nodes and "
            f"runs apt in a chroot); running as uid {os.geteuid()}. Run it with sudo."
        )
    key = image_key()
    workdir = image_dir(key)
    staging = workdir / "root.partial"
    debs_done = staging / _DEBS_MARK
    if staging.exists() and (force or not debs_done.exists()):
        shutil.rmtree(staging)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if debs_done.exists():
        progress(f"[1/4] reusing the Debian root already unpacked in {staging}")
    else:
        progress(
            f"[1/4] mmdebstrap: Debian unstable with {len(GUEST_PACKAGES)} packages "
            f"into {staging} (takes several minutes)"
        )
        _run_mmdebstrap(tools["mmdebstrap"], staging, progress)
        debs_done.write_text(key + "\n")
        progress(f"[1/4] done in {time.monotonic() - started:.0f} s")
    stage = time.monotonic()
    progress("[2/4] guest venv: schedagent's Python dependencies")
    _install_guest_venv(staging, progress)
    progress(f"[2/4] done in {time.monotonic() - stage:.0f} s")
    stage = time.monotonic()
    progress(
        "[3/4] prebuild: vmlinux.h and the built-in policies for the guest kernel, "
        "compiled natively by the guest's own toolchain in a chroot"
    )
    _prebuild(staging, progress)
    progress(f"[3/4] done in {time.monotonic() - stage:.0f} s")
    progress("[4/4] finishing: ext4 disk image of the root (faster than 9p under emulation)")
    _disable_udev(staging)
    (staging / "tmp").chmod(0o1777)
    for slot in range(SHARE_SLOTS):
        (staging / share_mount(slot).lstrip("/")).mkdir(parents=True, exist_ok=True)
    (staging / _READY_MARK).write_text(key + "\n")
    _make_disk(staging, workdir / "root.ext4", progress)
    final = workdir / "root"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    image = find_image()
    if image is None:
        raise SandboxError(
            f"the guest root at {final} has no /boot/vmlinuz-*; the package "
            "linux-image-amd64 did not install. Rerun with --force and read the log above."
        )
    progress(
        f"testbed image {key} built in {time.monotonic() - started:.0f} s: "
        f"kernel {image.kernel_release}"
    )
    return image


def _make_disk(root: Path, disk: Path, progress: Progress) -> None:
    """Write ``root`` into a sparse ext4 image; guests boot it with -snapshot."""
    mkfs = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"
    # Not disk.with_suffix(".partial"): for root.ext4 that is root.partial, the
    # staging directory the image is being made from (issue 14).
    tmp = disk.with_name(disk.name + ".tmp")
    tmp.unlink(missing_ok=True)
    _stream(
        [mkfs, "-q", "-F", "-L", "schedagent", "-d", str(root), str(tmp), "8G"],
        progress,
        "mkfs.ext4",
    )
    tmp.rename(disk)


def _disable_udev(root: Path) -> None:
    """Hide udevd from virtme-ng's init.

    Under TCG emulation "waiting for udev to settle" costs more than a minute of
    every boot, and nothing in the testbed needs udev: virtme-ng skips it when
    it cannot find the binary.
    """
    for rel in ("usr/lib/systemd/systemd-udevd", "lib/systemd/systemd-udevd"):
        path = root / rel
        if path.exists() or path.is_symlink():
            path.rename(path.with_name("systemd-udevd.disabled-by-schedagent"))


def _run_mmdebstrap(mmdebstrap: str, target: Path, progress: Progress) -> None:
    cmd = [
        mmdebstrap,
        "--variant=apt",
        "--format=directory",
        '--aptopt=Acquire::Check-Valid-Until "false"',
        "--include=" + ",".join(GUEST_PACKAGES),
        "sid",
        str(target),
    ]
    _stream(cmd, progress, "mmdebstrap")


def _install_guest_venv(root: Path, progress: Progress) -> None:
    """Create the guest venv and pip-install the requirements from a chroot.

    pip in the chroot reaches the registry only with the host's own client
    configuration, so the pip config and CA bundle are copied in first.
    """
    for conf in ("/etc/pip.conf", "/etc/ssl/certs/ca-certificates.crt", "/etc/resolv.conf"):
        src = Path(conf)
        if src.is_file():
            dst = root / conf.lstrip("/")
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink():
                dst.unlink()
            shutil.copyfile(src, dst)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
    }
    # --system-site-packages makes Debian's bcc module (python3-bpfcc) importable.
    _stream(
        ["chroot", str(root), "python3", "-m", "venv", "--system-site-packages", GUEST_VENV],
        progress,
        "venv",
        env,
    )
    _stream(
        [
            "chroot",
            str(root),
            f"{GUEST_VENV}/bin/pip",
            "install",
            "--progress-bar",
            "off",
            *GUEST_PYTHON_REQUIREMENTS,
        ],
        progress,
        "pip",
        env,
    )
    # The project itself, so the console script exists; at run time the
    # checkout is put first on PYTHONPATH, so the current code is what runs.
    src = root / "opt/schedagent/src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for item in (
        "pyproject.toml",
        "setup.py",
        "README.md",
        "schedagent",
        "mcp_server",
        "policies",
        "bpf",
        "workloads",
    ):
        path = PROJECT_ROOT / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy(path, src / item)
    _stream(
        [
            "chroot",
            str(root),
            f"{GUEST_VENV}/bin/pip",
            "install",
            "--no-deps",
            "--progress-bar",
            "off",
            "/opt/schedagent/src",
        ],
        progress,
        "pip",
        env,
    )


#: Where the image keeps what the prebuild stage prepared (config.DEFAULT_PREBUILT_DIR).
GUEST_PREBUILT_DIR = "/opt/schedagent/prebuilt"


def _prebuild(root: Path, progress: Progress) -> None:
    """Prepare vmlinux.h and the built-in policies for the guest's kernel, on the host.

    Under emulation, generating vmlinux.h took 13 minutes and each policy about 3 beside
    a loaded tune (issue 14). Here the guest's own bpftool and clang run natively in a
    chroot, reading the kernel's BTF and build id from its vmlinux, so the first tune in
    a fresh testbed finds them ready. The result is keyed by the kernel build id, as a
    compile in the guest would be.
    """
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SandboxError(
            f"no /boot/vmlinuz-* in {root}; linux-image-amd64 did not install. "
            "Rerun `schedagent sandbox build --force`."
        )
    sections = _kernel_sections(kernels[-1].read_bytes())
    tmp = root / "tmp"
    for name, data in sections.items():
        (tmp / f"schedagent-kernel{name}").write_bytes(data)
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "SCHEDAGENT_KERNEL_BTF": "/tmp/schedagent-kernel.BTF",
        "SCHEDAGENT_KERNEL_NOTES": "/tmp/schedagent-kernel.notes",
        "SCHEDAGENT_CACHE_DIR": GUEST_PREBUILT_DIR,
    }
    try:
        _stream(
            ["chroot", str(root), f"{GUEST_VENV}/bin/schedagent", "policies", "prebuild"],
            progress,
            "prebuild",
            env,
        )
    finally:
        for name in sections:
            (tmp / f"schedagent-kernel{name}").unlink(missing_ok=True)


def _kernel_sections(bzimage: bytes) -> dict[str, bytes]:
    """The ``.BTF`` and ``.notes`` sections of the vmlinux inside a bzImage."""
    import io

    from elftools.elf.elffile import ELFFile  # the testbed extra's dependency

    vmlinux = _decompress_payload(bzimage)
    elf = ELFFile(io.BytesIO(vmlinux))
    out: dict[str, bytes] = {}
    for name in (".BTF", ".notes"):
        section = elf.get_section_by_name(name)
        if section is None:
            raise SandboxError(
                f"the guest kernel's vmlinux has no {name} section; the "
                "testbed needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
            )
        out[name] = section.data()
    return out


def _decompress_payload(bzimage: bytes) -> bytes:
    """The vmlinux ELF compressed inside an x86 bzImage (boot protocol >= 2.08)."""
    import gzip
    import lzma
    import struct as st

    setup_sects = bzimage[0x1F1] or 4
    offset, length = st.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    # the kernel's build appends the uncompressed size (4 bytes) to every payload
    payload = bzimage[start : start + length - 4]
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        proc = subprocess.run(["zstd", "-dc"], input=payload, capture_output=True, check=False)
        if proc.returncode != 0:
            raise SandboxError(
                "zstd could not unpack the guest kernel: "
                f"{proc.stderr.decode(errors='replace').strip()}; "
                "install it with apt-get install zstd"
            )
        return proc.stdout
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return gzip.decompress(payload)
    raise SandboxError(
        f"the guest kernel's payload has an unknown compression "
        f"(magic {payload[:4].hex()}); expected zstd, xz or gzip"
    )


def _stream(
    cmd: list[str], progress: Progress, label: str, env: dict[str, str] | None = None
) -> None:
    """Run ``cmd``, forwarding its output lines as progress; raise on failure."""
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
    ) as proc:
        assert proc.stdout is not None  # set by stdout=PIPE
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-30:]
            if line:
                progress(f"  {label}: {line}")
        rc = proc.wait()
    if rc != 0:
        joined = "\n".join(tail)
        raise SandboxError(
            f"{label} failed with exit code {rc} while building the testbed. "
            f"Last output:\n{joined}\nFix the cause above and rerun `schedagent sandbox build`."
        )
