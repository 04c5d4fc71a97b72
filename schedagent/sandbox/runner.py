"""Boot the testbed guest and run a command in it.

The checkout is shared read-write into the guest at the same path, the command
runs there as root with the project importable and ``schedagent`` on PATH, and
its stdout, stderr and exit code come back through files in a shared run
directory. The guest console (kernel log lines included) goes to a log file, so
nothing from the kernel is mixed into the command's output.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from schedagent.config import PROJECT_ROOT, cache_dir
from schedagent.errors import SandboxError, SandboxTimeout
from schedagent.kernel.proctree import stop_tree
from schedagent.sandbox.hosttools import BOOT_TOOLS, require
from schedagent.sandbox.image import (
    GUEST_VENV,
    SHARE_SLOTS,
    GuestImage,
    Progress,
    build_image,
    share_mount,
)

log = logging.getLogger(__name__)

#: Environment variables forwarded from the host into the guest command.
FORWARDED_ENV_PREFIXES = ("SCHEDAGENT_", "PYTEST_ADDOPTS", "ANTHROPIC_")

_POLL_S = 0.2
#: boots tried when the guest dies before the command starts
BOOT_ATTEMPTS = 3


class GuestDiedBeforeStart(SandboxError):
    """The guest kernel died while booting; the command never ran."""


@dataclass(frozen=True, slots=True)
class VmSpec:
    """How to boot one guest."""

    cpus: int = 2
    memory: str = "4G"
    timeout_s: float = 1800.0
    cwd: Path = field(default_factory=Path.cwd)
    #: TCG threading when KVM is unusable. "single" (the default) runs the vCPUs in turn on
    #: one host thread. "multi" runs one host thread per vCPU, which is faster for parallel
    #: guest work, but QEMU 7.2 then lets a vCPU execute stale code while the guest kernel
    #: patches itself (static keys flip on every sched_ext enable and disable), and the guest
    #: dies with "Oops: int3". Single-threaded TCG cannot race. Its cost: QEMU switches vCPUs
    #: every 100 ms when both are busy, so a runnable guest task can see up to ~100 ms of
    #: extra wait. The guest gets SCHEDAGENT_VCPU_QUANTUM_MS so tests can allow for it.
    tcg_thread: str = field(
        default_factory=lambda: os.environ.get("SCHEDAGENT_TCG_THREAD", "single")
    )

    def vcpu_quantum_ms(self, kvm: bool) -> int:
        """Extra wait a runnable guest task may see from how vCPUs are emulated."""
        return 100 if not kvm and self.tcg_thread == "single" and self.cpus > 1 else 0


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a guest command returned."""

    exit_code: int
    boot_s: float
    total_s: float
    kvm: bool
    console_log: Path


def kvm_usable(image: GuestImage, progress: Progress = print) -> bool:
    """Whether KVM really works here, decided by a cached probe boot.

    ``/dev/kvm`` existing proves nothing: on some hosts the guest dies with an
    emulation failure or hangs. ``SCHEDAGENT_KVM=0|1`` skips the probe.
    """
    forced = os.environ.get("SCHEDAGENT_KVM")
    if forced in ("0", "1"):
        return forced == "1"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cache = cache_dir() / "kvm-probe.json"
    ident = f"{os.uname().release}|{image.kernel_release}"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("ident") == ident:
            return bool(cached["kvm"])
    except (OSError, ValueError, KeyError):
        pass
    progress("probing whether KVM works here (one short boot, cached afterwards)")
    try:
        result = _boot(image, ["true"], VmSpec(timeout_s=90.0, cwd=Path("/")), kvm=True, quiet=True)
        works = result.exit_code == 0
    except SandboxError as err:
        log.debug("KVM probe failed: %s", err)
        works = False
    progress(f"KVM {'works' if works else 'does not work here; using TCG emulation'}")
    cache.write_text(json.dumps({"ident": ident, "kvm": works}))
    return works


def run(cmd: list[str], spec: VmSpec, progress: Progress = print) -> RunResult:
    """Boot the guest, run ``cmd`` in ``spec.cwd`` and return its exit code.

    The command's stdout and stderr are streamed to ours while it runs.
    """
    if not cmd:
        raise SandboxError("no command given; usage: schedagent sandbox run -- CMD [ARGS...]")
    image = build_image(progress=progress)
    kvm = kvm_usable(image, progress)
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        try:
            return _boot(image, cmd, spec, kvm=kvm, quiet=False, progress=progress)
        except GuestDiedBeforeStart as err:
            # Under TCG the guest kernel occasionally dies in boot-time code patching
            # (an int3 oops); nothing of the command ran yet, so booting again is safe.
            if attempt == BOOT_ATTEMPTS:
                raise
            progress(
                f"{err}\nthe guest died before the command started; booting again "
                f"(attempt {attempt + 1} of {BOOT_ATTEMPTS})"
            )
    raise AssertionError("unreachable")


def shell(spec: VmSpec, progress: Progress = print) -> int:
    """Boot the guest with an interactive shell on this terminal."""
    image = build_image(progress=progress)
    kvm = kvm_usable(image, progress)
    rundir = _new_rundir()
    shares = _shares(spec, rundir)
    (rundir / "env.sh").write_text(_env_script(spec, shares, spec.vcpu_quantum_ms(kvm)))
    argv = _vng_argv(image, spec, shares, kvm)
    argv += ["--exec", f"bash --rcfile {share_mount(0)}/env.sh -i"]
    progress(
        f"booting the testbed shell ({'KVM' if kvm else 'TCG emulation'}); "
        "exit the shell to power off"
    )
    return subprocess.call(argv, env=_vng_env(argv[0]))


def _vng_env(vng: str) -> dict[str, str]:
    """Our environment, with vng's own directory on PATH (it runs virtme-run from there)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(vng).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def _new_rundir() -> Path:
    """A fresh run directory. Unique even for two boots in one second from one process:
    on a fresh cache the KVM probe boot fails at once and the real boot follows within
    the same second (a fixed timestamp-pid name then collided, seen in a CI dry run)."""
    runs = cache_dir() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    return Path(
        tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-", dir=runs)
    )


def _guest_cache() -> Path:
    path = cache_dir() / "guest-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _shares(spec: VmSpec, rundir: Path) -> list[Path]:
    """Host directories to share, run directory first (slot 0)."""
    wanted = [rundir, PROJECT_ROOT, _guest_cache(), spec.cwd.resolve()]
    shares: list[Path] = []
    for path in wanted:
        if path == Path("/"):
            continue
        # a directory already inside a share needs no slot of its own
        if any(path == s or s in path.parents for s in shares):
            continue
        shares.append(path)
    if len(shares) > SHARE_SLOTS:
        raise SandboxError(
            f"{len(shares)} directories to share, the image has {SHARE_SLOTS} "
            "slots; run from inside the checkout"
        )
    return shares


def _env_script(spec: VmSpec, shares: list[Path], quantum_ms: int = 0) -> str:
    """Shell lines that mount the shares at their host paths and set the environment."""
    lines = ["set -e"]
    for slot, path in enumerate(shares):
        if slot == 0:
            continue  # the run directory stays at its fixed mount point
        q = shlex.quote(str(path))
        lines.append(f"mkdir -p {q} && mount --bind {share_mount(slot)} {q}")
    lines += [
        "set +e",
        # virtme-ng links /lib/modules/<release> to /run/virtme/modules, which breaks the
        # relative build -> ../../../src/linux-headers-* link that bcc needs for headers;
        # /src makes it resolve again (the guest root is a throwaway snapshot).
        'kv=$(uname -r); [ -e "/lib/modules/$kv/build" ] || ln -sfn usr/src /src',
        f"export PATH={GUEST_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"export PYTHONPATH={shlex.quote(str(PROJECT_ROOT))}",
        "export HOME=/root LANG=C.UTF-8",
        "export SCHEDAGENT_IN_TESTBED=1",
        f"export SCHEDAGENT_VCPU_QUANTUM_MS={quantum_ms}",
        f"export SCHEDAGENT_CACHE_DIR={shlex.quote(str(_guest_cache()))}",
        "export SCHEDAGENT_STATE_DIR=/var/lib/schedagent",
    ]
    for key, value in sorted(os.environ.items()):
        if key.startswith(FORWARDED_ENV_PREFIXES) and key not in (
            "SCHEDAGENT_CACHE_DIR",
            "SCHEDAGENT_STATE_DIR",
            "SCHEDAGENT_IN_TESTBED",
            "SCHEDAGENT_VCPU_QUANTUM_MS",
        ):
            lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(f"cd {shlex.quote(str(spec.cwd))}")
    return "\n".join(lines) + "\n"


def _vng_argv(image: GuestImage, spec: VmSpec, shares: list[Path], kvm: bool) -> list[str]:
    tools = require(BOOT_TOOLS)
    argv = [
        tools["vng"],
        "-v",
        "--root-disk",
        str(image.disk),
        "--root-fstype",
        "ext4",
        "-r",
        str(image.kernel),
        "--cpus",
        str(spec.cpus),
        "-m",
        spec.memory,
        # The disk image is never written: -snapshot sends writes to a temp file,
        # and --rw lets the guest script create mount points anywhere.
        "--rw",
        # virtiofsd fails here ("fuse: invalid argument") and each of its retries
        # costs seconds before vng falls back to 9p anyway.
        "--force-9p",
    ]
    qemu_opts = ["-snapshot"]
    if not kvm:
        argv.append("--disable-kvm")
        qemu_opts += ["-accel", f"tcg,thread={spec.tcg_thread}"]
    for slot, path in enumerate(shares):
        argv += ["--rwdir", f"{share_mount(slot)}={path}"]
    return argv + [f"--qemu-opts={opt}" for opt in qemu_opts]


def _boot(
    image: GuestImage,
    cmd: list[str],
    spec: VmSpec,
    *,
    kvm: bool,
    quiet: bool,
    progress: Progress = print,
) -> RunResult:
    rundir = _new_rundir()
    shares = _shares(spec, rundir)
    run = share_mount(0)
    (rundir / "cmd.sh").write_text(
        "#!/bin/sh\n"
        + _env_script(spec, shares, spec.vcpu_quantum_ms(kvm))
        + f"touch {run}/started\n"
        + f"{shlex.join(cmd)} >{run}/stdout 2>{run}/stderr </dev/null\n"
        + f"echo $? >{run}/rc\n"
    )
    (rundir / "stdout").touch()
    (rundir / "stderr").touch()
    argv = _vng_argv(image, spec, shares, kvm) + ["--exec", f"sh {run}/cmd.sh"]
    console = rundir / "console.log"
    if not quiet:
        progress(
            f"booting testbed kernel {image.kernel_release} "
            f"({'KVM' if kvm else 'TCG emulation, no KVM'}), {spec.cpus} CPUs"
        )
    started = time.monotonic()
    with console.open("wb") as console_out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console_out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_vng_env(argv[0]),
        )
        boot_s = _follow(proc, rundir, spec.timeout_s, started, quiet, progress)
    total_s = time.monotonic() - started
    rc_file = rundir / "rc"
    if not rc_file.exists():
        tail = _tail(console)
        if boot_s < 0:
            raise GuestDiedBeforeStart(
                f"the testbed guest exited (vng rc {proc.returncode}) before the command "
                f"started. Last console lines:\n{tail}\nFull log: {console}"
            )
        raise SandboxError(
            f"the testbed guest exited (vng rc {proc.returncode}) without running the "
            f"command to completion. Last console lines:\n{tail}\nFull log: {console}"
        )
    return RunResult(int(rc_file.read_text().strip() or 1), boot_s, total_s, kvm, console)


def _follow(
    proc: subprocess.Popen[bytes],
    rundir: Path,
    timeout_s: float,
    started: float,
    quiet: bool,
    progress: Progress,
) -> float:
    """Stream the guest command's output until the VM exits; return the boot time."""
    streams: list[tuple[IO[bytes], IO[bytes]]] = []
    boot_s = -1.0
    try:
        while True:
            if boot_s < 0 and (rundir / "started").exists():
                boot_s = time.monotonic() - started
                if not quiet:
                    progress(f"guest booted in {boot_s:.1f} s")
                streams = [
                    ((rundir / "stdout").open("rb"), sys.stdout.buffer),
                    ((rundir / "stderr").open("rb"), sys.stderr.buffer),
                ]
            for src, dst in streams:
                _pump(src, dst, quiet)
            if proc.poll() is not None:
                for src, dst in streams:
                    _pump(src, dst, quiet)
                return boot_s
            if time.monotonic() - started > timeout_s:
                stop_tree(proc, signal.SIGTERM, grace_s=5.0)
                console = rundir / "console.log"
                raise SandboxTimeout(timeout_s, str(console), _tail(console))
            time.sleep(_POLL_S)
    finally:
        for src, _ in streams:
            src.close()
        if proc.poll() is None:
            stop_tree(proc, signal.SIGTERM, grace_s=5.0)


def _pump(src: IO[bytes], dst: IO[bytes], quiet: bool) -> None:
    data = src.read()
    if data and not quiet:
        dst.write(data)
        dst.flush()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.splitlines()[-lines:])
