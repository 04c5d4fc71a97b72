"""Confined reads of cgroup v2 id lists (``cgroup.procs``, ``cgroup.threads``).

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
import os
import stat
from pathlib import Path

from schedagent.errors import TargetRefused

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
