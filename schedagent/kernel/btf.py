"""A small reader for the kernel's BTF (``/sys/kernel/btf/vmlinux``).

schedagent detects kfuncs and sched_ext constants from BTF rather than from the
kernel version string, because the sched_ext API changes between releases and
distributions backport freely.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from schedagent.config import cache_dir, find_cached
from schedagent.errors import FeatureMissing

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

#: Build for another kernel than the running one: its raw BTF (the image build of the
#: testbed prepares the guest kernel's objects on the host this way).
KERNEL_BTF_ENV = "SCHEDAGENT_KERNEL_BTF"


def kernel_btf_path() -> Path:
    """The BTF of the kernel being built for: ``$SCHEDAGENT_KERNEL_BTF`` or the running one."""
    override = os.environ.get(KERNEL_BTF_ENV)
    return Path(override) if override else VMLINUX_BTF

_MAGIC = 0xEB9F
KIND_FUNC = 12
_KIND_ENUM = 6
_KIND_ENUM64 = 19
_KIND_FUNC_PROTO = 13
# Bytes of kind-specific data after the 12-byte btf_type header: (fixed, per vlen item).
_TRAILER = {
    1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0),
    8: (0, 0), 9: (0, 0), 10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0),
    15: (0, 12), 16: (0, 0), 17: (4, 0), 18: (0, 0), 19: (0, 12),
}


@dataclass(frozen=True, slots=True)
class BtfIndex:
    """Function names and enum constants found in one BTF blob."""

    digest: str
    funcs: frozenset[str]
    enums: dict[str, int]
    func_args: dict[str, int]

    def has_func(self, name: str) -> bool:
        """Whether a function (kfunc candidate) of this exact name exists."""
        return name in self.funcs

    def func_nargs(self, name: str) -> int:
        """Number of parameters of function ``name`` (0 when unknown)."""
        return self.func_args.get(name, 0)


def _name(strings: bytes, off: int) -> str:
    end = strings.index(b"\0", off)
    return strings[off:end].decode()


def parse(data: bytes) -> BtfIndex:
    """Parse raw BTF bytes into a :class:`BtfIndex`."""
    if len(data) < 24:
        raise ValueError(f"BTF blob too short: {len(data)} bytes")
    magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != _MAGIC:
        raise ValueError(f"not BTF: magic {magic:#x}, expected {_MAGIC:#x}")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    types = data[hdr_len + type_off: hdr_len + type_off + type_len]
    strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
    funcs: set[str] = set()
    enums: dict[str, int] = {}
    func_proto: dict[str, int] = {}
    proto_vlen: dict[int, int] = {}
    pos, type_id = 0, 0
    while pos < len(types):
        type_id += 1
        name_off, info, size_or_type = struct.unpack_from("<III", types, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        pos += 12
        if kind not in _TRAILER:
            raise ValueError(f"unknown BTF kind {kind} at type offset {pos - 12}")
        fixed, per = _TRAILER[kind]
        if kind == KIND_FUNC:
            fname = _name(strings, name_off)
            funcs.add(fname)
            func_proto[fname] = size_or_type
        elif kind == _KIND_FUNC_PROTO:
            proto_vlen[type_id] = vlen
        elif kind == _KIND_ENUM:
            signed = bool(info >> 31)
            for i in range(vlen):
                n_off, val = struct.unpack_from("<Ii" if signed else "<II", types, pos + 8 * i)
                enums[_name(strings, n_off)] = val
        elif kind == _KIND_ENUM64:
            for i in range(vlen):
                n_off, lo, hi = struct.unpack_from("<III", types, pos + 12 * i)
                enums[_name(strings, n_off)] = (hi << 32) | lo
        pos += fixed + per * vlen
    func_args = {name: proto_vlen.get(proto, 0) for name, proto in func_proto.items()}
    return BtfIndex(hashlib.sha256(data).hexdigest()[:16], frozenset(funcs), enums, func_args)


@lru_cache(maxsize=4)
def load(path: Path | None = None) -> BtfIndex:
    """The running kernel's BTF index, cached in memory and on disk by content hash.

    Parsing all of vmlinux's types in Python takes a while (a minute under
    emulation), so the index is stored under the cache directory. ``path`` defaults to
    the kernel being built for (:func:`kernel_btf_path`).
    """
    path = path or kernel_btf_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise FeatureMissing(
            "kernel BTF", f"{path} does not exist",
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (or use the testbed: "
            "schedagent sandbox run)") from err
    digest = hashlib.sha256(data).hexdigest()[:16]
    cached = cache_dir() / "btf" / f"{digest}.json"
    try:
        raw = json.loads((find_cached(Path("btf") / f"{digest}.json") or cached).read_text())
        return BtfIndex(digest, frozenset(raw["funcs"]), raw["enums"], raw["func_args"])
    except (OSError, ValueError, KeyError):
        pass
    index = parse(data)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps({"funcs": sorted(index.funcs), "enums": index.enums,
                               "func_args": index.func_args}))
    tmp.rename(cached)
    return index
