"""Build BPF scheduler objects: vmlinux.h, kfunc detection, clang, caching.

``vmlinux.h`` is generated from the running kernel's BTF and cached per kernel
build id. Which kfunc names exist is read from BTF, never from the version
string, and passed to the compiler as ``-DSA_HAVE_<kfunc>`` so the project's
compat header picks the right call. Objects are cached by a hash of the source,
the project headers, the flags and the kernel BTF.

Compiling is slow where it matters most: on a loaded host (that is why people tune
it) and under emulation, one policy took minutes and ``vmlinux.h`` thirteen. So
:func:`prebuild` prepares ``vmlinux.h`` and every built-in policy ahead of need (the
testbed image carries them, the daemon runs it at start), compiles run at raised
priority, and a read-only prebuilt directory (``$SCHEDAGENT_PREBUILT_DIR``) is
consulted after the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from schedagent.config import DATA_ROOT, cache_dir, find_cached
from schedagent.errors import CompileError, CompileLimitExceeded, ToolMissing
from schedagent.kernel import btf
from schedagent.kernel.proctree import stop_tree
from schedagent.policy import objcheck

log = logging.getLogger(__name__)

BPF_INCLUDE_DIR = DATA_ROOT / "bpf"

#: Build for another kernel than the running one: its ELF notes (holding the build id).
KERNEL_NOTES_ENV = "SCHEDAGENT_KERNEL_NOTES"
#: nice value compiles run at: the same raised priority the observer runs at, so a
#: loaded host (four CPU hogs and the server being tuned) cannot stall them.
COMPILE_NICE = -10

#: kfuncs whose presence changes how the compat header calls sched_ext.
COMPAT_KFUNCS = (
    "scx_bpf_dsq_insert",
    "scx_bpf_dsq_insert_vtime",
    "scx_bpf_dsq_move_to_local",
    "scx_bpf_now",
    "scx_bpf_select_cpu_and",
    "scx_bpf_select_cpu_dfl",
    "scx_bpf_cpu_node",
    "scx_bpf_task_set_dsq_vtime",
    "scx_bpf_task_set_slice",
)

CFLAGS = (
    "-g",
    "-O2",
    "-target",
    "bpf",
    "-D__TARGET_ARCH_x86",
    "-mcpu=v3",
    "-Wall",
    "-Wno-unused-function",
    "-Wno-unused-variable",
)


@dataclass(frozen=True, slots=True)
class BuiltObject:
    """A compiled scheduler object and how it was made."""

    path: Path
    source_hash: str
    cached: bool
    #: seconds clang took (0 for a cached object)
    compile_s: float = 0.0


def kernel_build_id(notes: Path | None = None) -> str:
    """The GNU build id (hex) of the kernel being built for, or its BTF digest if unreadable.

    That is the running kernel's (``/sys/kernel/notes``) unless ``$SCHEDAGENT_KERNEL_NOTES``
    names another kernel's notes section.
    """
    notes = notes or Path(os.environ.get(KERNEL_NOTES_ENV) or "/sys/kernel/notes")
    try:
        data = notes.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            pos += 12
            name = data[pos : pos + namesz]
            pos += (namesz + 3) & ~3
            desc = data[pos : pos + descsz]
            pos += (descsz + 3) & ~3
            if ntype == 3 and name.rstrip(b"\0") == b"GNU":
                return desc.hex()
    except OSError:
        pass
    return btf.load().digest


def _tool(name: str, fix: str, purpose: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(name, purpose, fix)
    return path


def vmlinux_header() -> Path:
    """Path of ``vmlinux.h`` for the running kernel, generated once per build id."""
    rel = Path("vmlinux") / kernel_build_id() / "vmlinux.h"
    found = find_cached(rel)
    if found is not None:
        return found
    target = cache_dir() / rel
    bpftool = _tool("bpftool", "apt-get install bpftool", "generate vmlinux.h from BTF")
    btf.load()  # raises FeatureMissing with a fix when there is no BTF
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with tmp.open("wb") as out:
        subprocess.run(
            [bpftool, "btf", "dump", "file", str(btf.kernel_btf_path()), "format", "c"],
            stdout=out,
            check=True,
            preexec_fn=_raise_priority,
        )
    tmp.rename(target)
    log.info("generated %s", target)
    return target


def _raise_priority() -> None:
    """In the child before exec: run at COMPILE_NICE (best effort without CAP_SYS_NICE)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, COMPILE_NICE)
    except OSError:
        pass


def compat_defines() -> list[str]:
    """``-D`` flags naming the kfuncs this kernel's BTF has."""
    index = btf.load()
    flags = [f"-DSA_HAVE_{name.lstrip('_')}=1" for name in COMPAT_KFUNCS if index.has_func(name)]
    nargs = index.func_nargs("scx_bpf_dsq_move_to_local")
    if nargs:
        flags.append(f"-DSA_MOVE_TO_LOCAL_NARGS={nargs}")
    for const in ("SCX_OPS_SWITCH_PARTIAL", "SCX_OPS_ENQ_LAST", "SCX_OPS_KEEP_BUILTIN_IDLE"):
        if const in index.enums:
            flags.append(f"-DSA_HAVE_{const}=1")
    if index.ops_layout and "cgroup_set_weight" not in index.ops_layout:
        # sched_ext's cgroup ops exist only with CONFIG_EXT_GROUP_SCHED. Said by absence,
        # so kernels that have them (all the prebuilt objects' kernels) keep their flags
        # and with them their objects' cache keys.
        flags.append("-DSA_NO_CGROUP_OPS=1")
    return flags


def _project_headers_digest() -> str:
    digest = hashlib.sha256()
    for header in sorted(BPF_INCLUDE_DIR.rglob("*.h")):
        digest.update(header.name.encode())
        digest.update(header.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class CompileLimits:
    """Bounds on one clang run: a scheduler compiles in about a second and 150 MB.

    Without them a macro bomb took clang past 590 MB until it crashed, and an
    include bomb ran for minutes (issue 12). Under TCG emulation in the testbed one
    policy took minutes, hence the generous time limits; memory is what a bomb
    exhausts first, and 1 GiB of address space (clang maps ~150 MB for a real
    7.2 vmlinux.h) keeps it from taking a 2 GiB guest down with it.
    """

    timeout_s: float = 900.0
    cpu_s: int = 600
    address_space_bytes: int = 1 << 30
    output_bytes: int = 64 << 20


DEFAULT_LIMITS = CompileLimits()


@dataclass(frozen=True, slots=True)
class IncludeBox:
    """The only headers a compile may see: vmlinux.h, libbpf's bpf/ and the project's."""

    vmlinux_h: Path
    libbpf_dir: Path
    project_headers: Path


#: Where distributions install libbpf's BPF-side headers (bpf_helpers.h ...).
LIBBPF_HEADER_DIRS = (Path("/usr/include/bpf"), Path("/usr/local/include/bpf"))


def libbpf_headers() -> Path:
    """The directory holding libbpf's ``bpf_helpers.h``."""
    for candidate in LIBBPF_HEADER_DIRS:
        if (candidate / "bpf_helpers.h").is_file():
            return candidate
    raise ToolMissing(
        "libbpf-dev", "provide <bpf/bpf_helpers.h> for BPF schedulers", "apt-get install libbpf-dev"
    )


def compile_source(
    source: Path, extra_flags: tuple[str, ...] = (), limits: CompileLimits = DEFAULT_LIMITS
) -> BuiltObject:
    """Compile ``source`` to a BPF object, reusing a cached object when possible."""
    header = vmlinux_header()
    flags = [*CFLAGS, *compat_defines(), *extra_flags]
    return _cached_build(source, flags, [_project_headers_digest().encode()], header, limits)


OBSERVER_SOURCE = BPF_INCLUDE_DIR / "observer" / "schedobs.bpf.c"


def compile_observer(source: Path = OBSERVER_SOURCE) -> BuiltObject:
    """The observer's object, compiled once per source and kernel build id.

    The observer is the project's own read-only program, not a candidate: it is built
    without ``vmlinux.h`` (it declares the few kernel fields it reads, and libbpf
    relocates them against the running kernel), so no ``bpftool`` is needed and the
    compile takes about a second. It still compiles in the same box and limits.
    """
    empty = cache_dir() / "observer" / "vmlinux.h"  # the box wants one; none is included
    if not empty.exists():
        empty.parent.mkdir(parents=True, exist_ok=True)
        empty.write_text("")
    return _cached_build(source, list(CFLAGS), [], empty, DEFAULT_LIMITS)


def _cached_build(
    source: Path, flags: list[str], key_parts: list[bytes], header: Path, limits: CompileLimits
) -> BuiltObject:
    """The cached object for this source, flags and kernel, else compiled into the cache."""
    text = source.read_bytes()
    key = hashlib.sha256(
        b"\0".join([text, *key_parts, " ".join(flags).encode(), kernel_build_id().encode()])
    ).hexdigest()
    rel = Path("objects") / f"{source.stem}-{key[:20]}.bpf.o"
    found = find_cached(rel)
    if found is not None:
        return BuiltObject(found, key, cached=True)
    obj = cache_dir() / rel
    obj.parent.mkdir(parents=True, exist_ok=True)
    box = IncludeBox(header, libbpf_headers(), BPF_INCLUDE_DIR / "schedagent")
    started = time.monotonic()
    build_object(text, source, obj, flags, box, limits)
    return BuiltObject(obj, key, cached=False, compile_s=time.monotonic() - started)


def build_object(
    text: bytes,
    source: Path,
    out: Path,
    flags: list[str],
    box: IncludeBox,
    limits: CompileLimits = DEFAULT_LIMITS,
) -> None:
    """Compile ``text`` (the bytes read from ``source``) in a box and write ``out``.

    The box: a private directory holding a copy of the text (so quote includes find
    nothing beside the original, and clang compiles exactly the bytes that were
    hashed) and an include directory with only ``vmlinux.h``, ``bpf/`` and
    ``schedagent/``; ``-nostdinc`` drops every system path. clang runs under
    rlimits and a wall-clock timeout, and only diagnostics about the submitted file
    come back: a compile error must never quote another file. clang runs twice:
    source to LLVM IR, which :func:`objcheck.check_ir` reads for assembly (however it
    was spelled: an assembler's ``.incbin`` reads any file root can), then that very
    IR to the object.
    """
    clang = _tool("clang", "apt-get install clang llvm", "compile BPF schedulers")
    with tempfile.TemporaryDirectory(prefix="schedagent-cc-") as tmp:
        root = Path(tmp)
        inc, src_dir = root / "include", root / "src"
        inc.mkdir()
        src_dir.mkdir()
        (inc / "vmlinux.h").symlink_to(box.vmlinux_h)
        (inc / "bpf").symlink_to(box.libbpf_dir)
        (inc / "schedagent").symlink_to(box.project_headers)
        src = src_dir / source.name
        src.write_bytes(text)
        tmp_ir, tmp_out = root / "out.ll", root / "out.o"
        # stage 1: source to IR (unoptimised, as the one-step compile would optimise it)
        cmd = [
            clang,
            *flags,
            "-nostdinc",
            "-isystem",
            str(inc),
            "-fno-crash-diagnostics",
            "-ferror-limit=20",
            "-S",
            "-emit-llvm",
            "-Xclang",
            "-disable-llvm-passes",
            str(src),
            "-o",
            str(tmp_ir),
        ]
        proc = _run_limited(cmd, src_dir, limits, str(source))
        if proc.returncode != 0 or not tmp_ir.exists():
            raise _compile_error(source, src, text, proc, limits)
        # no assembly: a directive like .incbin reads host files into the object
        objcheck.check_ir(tmp_ir.read_text(errors="replace"), str(source))
        # stage 2: exactly that IR to the object (no preprocessor, no headers)
        cmd = [
            clang,
            *_codegen_flags(flags),
            "-fno-crash-diagnostics",
            "-c",
            "-x",
            "ir",
            str(tmp_ir),
            "-o",
            str(tmp_out),
        ]
        proc = _run_limited(cmd, root, limits, str(source))
        if proc.returncode != 0 or not tmp_out.exists():
            raise _compile_error(source, src, text, proc, limits)
        partial = out.with_suffix(".tmp")
        shutil.copyfile(tmp_out, partial)
        partial.rename(out)


def _codegen_flags(flags: list[str]) -> list[str]:
    """The flags that matter to code generation from IR (target, CPU, -O, -g)."""
    kept: list[str] = []
    for i, flag in enumerate(flags):
        if (
            flag in ("-target", "-g")
            or flag.startswith(("-O", "-mcpu=", "-g"))
            or (i and flags[i - 1] == "-target")
        ):
            kept.append(flag)
    return kept


def _run_limited(
    cmd: list[str], cwd: Path, limits: CompileLimits, source: str
) -> subprocess.CompletedProcess[str]:
    def apply_limits() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a core holds what clang read
        _raise_priority()

    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        # the child only calls setrlimit and setpriority before exec: no
        # lock a thread of the parent could hold is taken there
        preexec_fn=apply_limits,  # noqa: PLW1509
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=limits.timeout_s)
    except subprocess.TimeoutExpired as err:
        stop_tree(proc, signal.SIGKILL)
        raise CompileLimitExceeded(source, "wall-clock time", int(limits.timeout_s), "s") from err
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


_DIAG = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|fatal error): "
    r"(?P<msg>.*)$"
)
_OOM = ("out of memory", "Allocation failed", "bad_alloc", "Cannot allocate memory")


def _limit_tripped(
    source: Path, proc: subprocess.CompletedProcess[str], limits: CompileLimits
) -> CompileLimitExceeded | None:
    rc = proc.returncode
    if rc in (-signal.SIGXCPU, -signal.SIGKILL):
        return CompileLimitExceeded(str(source), "CPU time", limits.cpu_s, "s")
    if rc == -signal.SIGXFSZ:
        return CompileLimitExceeded(str(source), "output size", limits.output_bytes, "bytes")
    if any(marker in proc.stderr for marker in _OOM):
        return CompileLimitExceeded(str(source), "memory", limits.address_space_bytes, "bytes")
    return None


def _compile_error(
    source: Path,
    boxed: Path,
    text: bytes,
    proc: subprocess.CompletedProcess[str],
    limits: CompileLimits,
) -> CompileError | CompileLimitExceeded:
    tripped = _limit_tripped(source, proc, limits)
    if tripped is not None:
        return tripped
    diagnostics: list[str] = []
    excerpt: list[str] = []
    lines = text.decode(errors="replace").splitlines()
    others = 0
    for raw in proc.stderr.splitlines():
        match = _DIAG.match(raw)
        if not match:
            continue  # source lines, carets, notes and backtraces are never passed on
        if match["file"] != str(boxed):
            others += 1  # about a header: its text must not reach the caller
            continue
        lineno = int(match["line"])
        diagnostics.append(f"{source}:{lineno}:{match['col']}: {match['sev']}: {match['msg']}")
        if len(excerpt) < 30:
            for n in range(max(1, lineno - 2), min(len(lines), lineno + 2) + 1):
                mark = ">>" if n == lineno else "  "
                excerpt.append(f"{mark} {n:4d} | {lines[n - 1]}")
            excerpt.append("")
    if others:
        diagnostics.append(f"({others} more error(s) inside included headers, not shown)")
    if not diagnostics or diagnostics[0].startswith("("):
        crashed = " (clang crashed)" if proc.returncode < 0 or "crash" in proc.stderr else ""
        diagnostics.insert(0, f"{source}: clang exited with status {proc.returncode}{crashed}")
    return CompileError(str(source), diagnostics, "\n".join(excerpt).rstrip())


@dataclass(slots=True)
class PrebuildReport:
    """What :func:`prebuild` prepared, and how long each part took."""

    build_id: str
    cache: str
    vmlinux_s: float = 0.0
    objects: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def prebuild(sources: list[Path], progress: Callable[[str], None] | None = None) -> PrebuildReport:
    """Prepare ``vmlinux.h`` and compile ``sources`` for the kernel being built for.

    Failures are collected, not raised: one policy that does not build on this kernel
    must not keep the others from being prepared.
    """
    say = progress or (lambda line: None)
    started = time.monotonic()
    header = vmlinux_header()
    report = PrebuildReport(
        kernel_build_id(), str(header.parent.parent.parent), time.monotonic() - started
    )
    say(f"vmlinux.h for kernel {report.build_id[:12]} ready in {report.vmlinux_s:.1f} s")
    for source in sources:
        name = source.name.removesuffix(".bpf.c")
        try:
            built = compile_source(source)
        except (CompileError, ToolMissing) as err:
            report.failed[name] = str(err).splitlines()[0]
            say(f"{name}: FAILED: {report.failed[name]}")
            continue
        report.objects[name] = built.compile_s
        say(f"{name}: {'cached' if built.cached else f'compiled in {built.compile_s:.1f} s'}")
    try:  # the observer too: a daemon's first window then waits on no compile
        built = compile_observer()
        report.objects["observer"] = built.compile_s
    except (CompileError, ToolMissing) as err:
        report.failed["observer"] = str(err).splitlines()[0]
    return report
