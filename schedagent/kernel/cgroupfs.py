"""Confined reads of cgroup v2 id lists (``cgroup.procs``, ``cgroup.threads``) and of
the host's CPU controls (``cpu.max``, ``cpu.weight``: :func:`scan_controls`).

A cgroup path arrives from untrusted callers (MCP, the daemon socket), and root
reads it. So the path is checked as a sequence of names, not as text: no empty,
``.`` or ``..`` component, and every directory is opened relative to its parent
with ``O_NOFOLLOW`` on the same filesystem as the root, so neither a symlink nor a
bind mount can lead outside ``/sys/fs/cgroup``. The file is parsed as a list of
ids and its content never appears in an error (a symlink to ``/etc/shadow`` once
returned the file's first line). Errors about a path never say more than "not a
cgroup under the root", so they do not reveal what exists elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from schedagent.errors import TargetRefused

log = logging.getLogger(__name__)

#: The cgroup v2 mount. Tests point it at a tmp tree (``root=`` or monkeypatch).
CGROUP_ROOT = Path("/sys/fs/cgroup")

#: The id files a target may be read from.
ID_FILES = frozenset({"cgroup.procs", "cgroup.threads"})

#: Bytes read from an id file at most (4M pids of 8 characters each).
MAX_ID_BYTES = 32 * 1024 * 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

_HINT = (
    "pass a cgroup v2 path relative to /sys/fs/cgroup with no '..', e.g. "
    "system.slice/nginx.service (see `systemctl status UNIT` or /proc/PID/cgroup)"
)


def components(cgroup: str) -> list[str]:
    """The path's names, checked: no ``..``/``.``/empty names and no control characters."""
    if not cgroup or len(cgroup) > 4096:
        raise TargetRefused("cgroup", cgroup[:64], "1 to 4096 characters", _HINT)
    names = [n for n in cgroup.strip("/").split("/")]
    for name in names:
        if name in ("", ".", ".."):
            raise TargetRefused("cgroup", cgroup, "no empty, '.' or '..' components", _HINT)
        if any(ord(c) < 0x20 or c == "\x7f" for c in name) or len(name) > 255:
            raise TargetRefused("cgroup", cgroup, "printable names of at most 255 bytes", _HINT)
    return names


def normalize(cgroup: str) -> str:
    """The canonical relative form (``a/b``) of a checked cgroup path."""
    return "/".join(components(cgroup))


def _read_bounded(fd: int) -> bytes:
    """Up to MAX_ID_BYTES + 1 bytes (cgroup files answer one seq_file page per read)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ID_BYTES:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_ids(cgroup: str, filename: str = "cgroup.procs", root: Path | None = None) -> list[int]:
    """The ids in ``<root>/<cgroup>/<filename>``, opened without following any symlink."""
    if filename not in ID_FILES:
        raise ValueError(f"{filename!r} is not one of {sorted(ID_FILES)}")
    names = components(cgroup)
    base = root if root is not None else CGROUP_ROOT
    not_found = TargetRefused("cgroup", cgroup, f"an existing cgroup directory under {base}", _HINT)
    fds: list[int] = []
    try:
        try:
            fds.append(os.open(base, _DIR_FLAGS))
        except OSError as err:
            raise TargetRefused(
                "cgroup",
                cgroup,
                f"a cgroup v2 filesystem at {base}",
                "mount cgroup2 there (cgroup v1 is not supported)",
            ) from err
        device = os.fstat(fds[0]).st_dev
        for name in names:
            try:
                fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
            except OSError as err:  # absent, a symlink (ELOOP) or not a directory: one answer
                raise not_found from err
            if os.fstat(fds[-1]).st_dev != device:  # a mount point: not the cgroup fs
                raise not_found
        try:
            fd = os.open(filename, _FILE_FLAGS, dir_fd=fds[-1])
        except OSError as err:
            raise not_found from err
        fds.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_dev != device:
            raise not_found
        data = _read_bounded(fd)
    finally:
        for fd in reversed(fds):
            with contextlib.suppress(OSError):
                os.close(fd)
    try:
        if len(data) > MAX_ID_BYTES:
            raise ValueError("too large")
        return sorted({int(t) for t in data.split()})
    except ValueError as err:  # never quote the content: it may be a file it should not be
        raise TargetRefused("cgroup", cgroup, f"{filename} to hold a list of ids", _HINT) from err


# ---- the host's CPU controls: cgroups with cpu.max limits or non-default cpu.weight ----

#: cgroup v2's default ``cpu.weight`` (CGROUP_WEIGHT_DFL).
DEFAULT_WEIGHT = 100
#: How deep and how many cgroups :func:`scan_controls` walks at most (a host with tens of
#: thousands of cgroups is scanned in part, and says so).
MAX_SCAN_DEPTH = 32
MAX_SCAN_CGROUPS = 20000
#: Bytes read from one control file at most (cpu.max is two numbers).
_MAX_CONTROL_BYTES = 4096


@dataclass(frozen=True, slots=True)
class CgroupControl:
    """One populated cgroup whose CPU controls a whole-system scheduler must honour."""

    #: path relative to the cgroup root, e.g. ``system.slice/db.service``
    cgroup: str
    #: ``cpu.max`` quota per period (µs), None when the first field is ``max``
    quota_us: int | None
    period_us: int
    #: ``cpu.weight`` (1..10000; 100 is the default)
    weight: int

    @property
    def is_limited(self) -> bool:
        """Whether ``cpu.max`` caps this cgroup (it needs bandwidth support)."""
        return self.quota_us is not None

    @property
    def is_weighted(self) -> bool:
        """Whether ``cpu.weight`` differs from the default (it needs weight support)."""
        return self.weight != DEFAULT_WEIGHT

    @property
    def needs(self) -> frozenset[str]:
        """The cgroup support a policy must have to honour this cgroup: weight, bandwidth."""
        return frozenset(
            name
            for name, wanted in (("bandwidth", self.is_limited), ("weight", self.is_weighted))
            if wanted
        )

    def describe(self) -> str:
        """``cgroup 'a/b' has cpu.max 50000 100000`` (parsed numbers, never file text)."""
        parts = []
        if self.is_limited:
            parts.append(f"cpu.max {self.quota_us} {self.period_us}")
        if self.is_weighted:
            parts.append(f"cpu.weight {self.weight}")
        return f"cgroup {self.cgroup!r} has {' and '.join(parts)}"


@dataclass(frozen=True, slots=True)
class ControlScan:
    """What :func:`scan_controls` found."""

    controls: tuple[CgroupControl, ...]
    #: cgroups looked at
    scanned: int
    #: True when the walk is incomplete: MAX_SCAN_DEPTH or MAX_SCAN_CGROUPS cut it short,
    #: or a directory could not be read
    truncated: bool = False


def scan_controls(root: Path | None = None) -> ControlScan:
    """Populated cgroups under ``root`` with a ``cpu.max`` limit or a non-default
    ``cpu.weight``; a cgroup without the cpu controller has neither file and is skipped.

    "Populated" is ``cgroup.events``' ``populated 1``: some process lives in the cgroup or
    below it, which is where both controls act (cpu.max caps the whole subtree). The
    walk opens every directory relative to its parent with ``O_NOFOLLOW`` and stays on
    the root's filesystem; a host without cgroup v2 at ``root`` has nothing to report.
    """
    base = root if root is not None else CGROUP_ROOT
    try:
        fd = os.open(base, _DIR_FLAGS)
    except FileNotFoundError:
        return ControlScan((), 0)
    except OSError:  # there but unreadable: what it holds is unknown
        return ControlScan((), 0, truncated=True)
    walk = _Walk(os.fstat(fd).st_dev)
    try:
        walk.visit(fd, "", 0)
    finally:
        os.close(fd)
    return ControlScan(tuple(walk.found), walk.scanned, walk.truncated)


@dataclass(slots=True)
class _Walk:
    device: int
    found: list[CgroupControl] = field(default_factory=list)
    scanned: int = 0
    truncated: bool = False

    def visit(self, fd: int, path: str, depth: int) -> None:
        self.scanned += 1
        control = _control(fd, path) if path else None  # the root has no cpu.max/cpu.weight
        if control is not None:
            self.found.append(control)
        try:
            with os.scandir(fd) as entries:
                names = sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return  # removed meanwhile: nothing below it any more
        except OSError:
            self.truncated = True  # unreadable: what is below it is unknown
            return
        for name in names:
            if depth + 1 > MAX_SCAN_DEPTH or self.scanned >= MAX_SCAN_CGROUPS:
                self.truncated = True
                return
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:  # removed meanwhile, or a symlink: not a cgroup to scan
                continue
            try:
                if os.fstat(child).st_dev == self.device:  # a mount point is not the cgroup fs
                    self.visit(child, f"{path}/{name}" if path else name, depth + 1)
            finally:
                os.close(child)


def _control(fd: int, path: str) -> CgroupControl | None:
    """The cgroup's controls if it is populated and either one is set; None otherwise
    (also when a file is absent or does not parse: its content is never reported)."""
    cpu_max, weight_text = _read_small(fd, "cpu.max"), _read_small(fd, "cpu.weight")
    if cpu_max is None or weight_text is None:
        return None
    try:
        quota_text, period_text = cpu_max.split()
        quota = None if quota_text == "max" else int(quota_text)
        period, weight = int(period_text), int(weight_text.strip())
    except ValueError:
        log.debug("cgroup %r: cpu.max or cpu.weight does not parse; skipped", path)
        return None
    control = CgroupControl(path, quota, period, weight)
    if not control.needs:
        return None
    events = _read_small(fd, "cgroup.events") or ""
    if "populated 1" not in events.splitlines():
        return None
    return control


def _read_small(dir_fd: int, name: str) -> str | None:
    """A small regular file of this directory on the cgroup fs, or None."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _MAX_CONTROL_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > _MAX_CONTROL_BYTES:
        return None
    return data.decode("ascii", errors="replace")
