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
from dataclasses import dataclass, field
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
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19
_MODIFIERS = frozenset({KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG})
#: The kernel struct whose layout the loader writes into (name, flags, timeout_ms).
OPS_STRUCT = "sched_ext_ops"
# Bytes of kind-specific data after the 12-byte btf_type header: (fixed, per vlen item)
# (include/uapi/linux/btf.h).
_TRAILER = {
    KIND_INT: (4, 0),
    KIND_PTR: (0, 0),
    KIND_ARRAY: (12, 0),
    KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8),
    KIND_FWD: (0, 0),
    KIND_TYPEDEF: (0, 0),
    KIND_VOLATILE: (0, 0),
    KIND_CONST: (0, 0),
    KIND_RESTRICT: (0, 0),
    KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (0, 8),
    KIND_VAR: (4, 0),
    KIND_DATASEC: (0, 12),
    KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (4, 0),
    KIND_TYPE_TAG: (0, 0),
    KIND_ENUM64: (0, 12),
}
#: Kinds whose vlen items start with a name offset (members, enumerators).
_NAMED_ITEMS = frozenset({KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64})


@dataclass(frozen=True, slots=True)
class BtfIndex:
    """Function names and enum constants found in one BTF blob."""

    digest: str
    funcs: frozenset[str]
    enums: dict[str, int]
    func_args: dict[str, int]
    #: member -> (byte offset, byte size) of ``struct sched_ext_ops``; empty without sched_ext
    ops_layout: dict[str, tuple[int, int]] = field(default_factory=dict)

    def has_func(self, name: str) -> bool:
        """Whether a function (kfunc candidate) of this exact name exists."""
        return name in self.funcs

    def func_nargs(self, name: str) -> int:
        """Number of parameters of function ``name`` (0 when unknown)."""
        return self.func_args.get(name, 0)


def parse(data: bytes) -> BtfIndex:
    """Parse raw BTF bytes into a :class:`BtfIndex`."""
    table = parse_types(data)
    funcs: dict[str, int] = {}  # function name -> the id of its FUNC_PROTO
    nargs: dict[int, int] = {}  # FUNC_PROTO id -> its parameter count
    enums: dict[str, int] = {}
    for type_id, typ in enumerate(table.types):
        if typ.kind == KIND_FUNC:
            funcs[typ.name] = typ.size_or_type
        elif typ.kind == KIND_FUNC_PROTO:
            nargs[type_id] = typ.vlen
        elif typ.kind in (KIND_ENUM, KIND_ENUM64):
            enums.update(table.enumerators(type_id))
    func_args = {name: nargs.get(proto, 0) for name, proto in funcs.items()}
    ops_id = table.find(OPS_STRUCT, KIND_STRUCT)
    layout = table.layout(ops_id) if ops_id else {}
    return BtfIndex(
        hashlib.sha256(data).hexdigest()[:16], frozenset(funcs), enums, func_args, layout
    )


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
            "kernel BTF",
            f"{path} does not exist",
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (or use the testbed: "
            "schedagent sandbox run)",
        ) from err
    digest = hashlib.sha256(data).hexdigest()[:16]
    cached = cache_dir() / "btf" / f"{digest}.json"
    try:
        raw = json.loads((find_cached(Path("btf") / f"{digest}.json") or cached).read_text())
        layout = {k: (int(v[0]), int(v[1])) for k, v in raw["ops_layout"].items()}
        return BtfIndex(digest, frozenset(raw["funcs"]), raw["enums"], raw["func_args"], layout)
    except (OSError, ValueError, KeyError):
        pass
    index = parse(data)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "funcs": sorted(index.funcs),
                "enums": index.enums,
                "func_args": index.func_args,
                "ops_layout": index.ops_layout,
            }
        )
    )
    tmp.rename(cached)
    return index


@dataclass(frozen=True, slots=True)
class BtfType:
    """One BTF type record: its kind, name, size-or-type word and kind-specific trailer."""

    kind: int
    name: str
    size_or_type: int
    vlen: int
    kind_flag: bool
    trailer: bytes


@dataclass(frozen=True, slots=True)
class Member:
    """A struct/union member, or a DATASEC variable (``offset`` in bytes for those)."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


class TypeTable:
    """Every type of one BTF blob, by id (id 0 is ``void``), for layout questions.

    Used on the kernel's BTF (the ``sched_ext_ops`` layout) and on an object's own
    ``.BTF`` section (what its struct_ops variable and map definitions really are).
    """

    def __init__(self, types: list[BtfType], member_names: dict[int, str]) -> None:
        self.types = types
        self._names = member_names

    def __len__(self) -> int:
        return len(self.types)

    def get(self, type_id: int) -> BtfType:
        """The type with id ``type_id``; ValueError for an id out of range."""
        if not 0 < type_id < len(self.types):
            raise ValueError(f"BTF type id {type_id} out of range (1..{len(self.types) - 1})")
        return self.types[type_id]

    def find(self, name: str, kind: int) -> int:
        """Id of the first type of ``kind`` named ``name``; 0 when there is none."""
        for type_id, typ in enumerate(self.types):
            if type_id and typ.kind == kind and typ.name == name:
                return type_id
        return 0

    def skip_mods(self, type_id: int) -> int:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type."""
        for _ in range(64):
            if type_id == 0 or self.get(type_id).kind not in _MODIFIERS:
                return type_id
            type_id = self.get(type_id).size_or_type
        raise ValueError(f"BTF modifier chain too long at type {type_id}")

    def size(self, type_id: int) -> int:
        """Byte size of a type (pointers are 8 bytes: BPF and x86-64)."""
        for _ in range(64):
            type_id = self.skip_mods(type_id)
            if type_id == 0:
                return 0
            typ = self.get(type_id)
            if typ.kind == KIND_PTR:
                return 8
            if typ.kind == KIND_ARRAY:
                elem, _index, nelems = struct.unpack_from("<III", typ.trailer, 0)
                return self.size(elem) * int(nelems)
            if typ.kind in (
                KIND_INT,
                KIND_STRUCT,
                KIND_UNION,
                KIND_ENUM,
                KIND_FLOAT,
                KIND_ENUM64,
                KIND_DATASEC,
            ):
                return typ.size_or_type
            if typ.kind == KIND_VAR:
                type_id = typ.size_or_type
                continue
            return 0
        raise ValueError("BTF type chain too long")

    def members(self, type_id: int) -> list[Member]:
        """Members of a struct or union, or the variables of a DATASEC."""
        typ = self.get(type_id)
        out: list[Member] = []
        if typ.kind in (KIND_STRUCT, KIND_UNION):
            for i in range(typ.vlen):
                name_off, mtype, offset = struct.unpack_from("<III", typ.trailer, 12 * i)
                bits = offset & 0xFFFFFF if typ.kind_flag else offset
                fsize = offset >> 24 if typ.kind_flag else 0
                out.append(Member(self._names.get(name_off, ""), mtype, bits, fsize))
        elif typ.kind == KIND_DATASEC:
            out += [
                Member(self.get(var).name, var, offset * 8, 0)
                for var, offset, _size in _datasec_entries(typ)
            ]
        return out

    def section_vars(self, section: str) -> dict[str, tuple[int, int]]:
        """variable -> (byte offset, byte size) in the data section ``section`` (``.rodata``,
        ``.bss`` ...), as its DATASEC declares them; empty when the BTF has no such section."""
        sec_id = self.find(section, KIND_DATASEC)
        if not sec_id:
            return {}
        return {
            self.get(var).name: (offset, size)
            for var, offset, size in _datasec_entries(self.get(sec_id))
        }

    def enumerators(self, type_id: int) -> list[tuple[str, int]]:
        """(name, value) of each constant of an ENUM or ENUM64 type; empty for other kinds."""
        typ = self.get(type_id)
        if typ.kind == KIND_ENUM:
            fmt = "<Ii" if typ.kind_flag else "<II"  # kind_flag: a signed enum
            return [
                (self._names[n_off], val) for n_off, val in struct.iter_unpack(fmt, typ.trailer)
            ]
        if typ.kind == KIND_ENUM64:
            return [
                (self._names[n_off], (hi << 32) | lo)
                for n_off, lo, hi in struct.iter_unpack("<III", typ.trailer)
            ]
        return []

    def layout(self, type_id: int) -> dict[str, tuple[int, int]]:
        """member -> (byte offset, byte size) of a struct (bitfields and anonymous skipped)."""
        return {
            m.name: (m.bit_offset // 8, self.size(m.type_id))
            for m in self.members(type_id)
            if m.name and not m.bitfield_size
        }

    def array_len(self, type_id: int) -> int | None:
        """Element count of an array type (after modifiers), or None for other kinds."""
        typ = self.get(self.skip_mods(type_id))
        if typ.kind != KIND_ARRAY:
            return None
        return int(struct.unpack_from("<III", typ.trailer, 0)[2])


def parse_types(data: bytes) -> TypeTable:
    """Parse every type of a raw BTF blob (kernel or ``.BTF`` section) into a table."""
    if len(data) < 24:
        raise ValueError(f"BTF blob too short: {len(data)} bytes")
    magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    if magic != _MAGIC:
        raise ValueError(f"not BTF: magic {magic:#x}, expected {_MAGIC:#x}")
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    types = data[hdr_len + type_off : hdr_len + type_off + type_len]
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    names: dict[int, str] = {}

    def name(off: int) -> str:
        if off not in names:
            end = strings.find(b"\0", off)
            if off >= len(strings) or end < 0:
                raise ValueError(f"BTF name offset {off} outside the string section")
            names[off] = strings[off:end].decode(errors="replace")
        return names[off]

    table: list[BtfType] = [BtfType(0, "void", 0, 0, False, b"")]
    pos = 0
    while pos + 12 <= len(types):
        name_off, info, size_or_type = struct.unpack_from("<III", types, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind not in _TRAILER:
            raise ValueError(f"unknown BTF kind {kind} at type offset {pos}")
        fixed, per = _TRAILER[kind]
        end = pos + 12 + fixed + per * vlen
        if end > len(types):
            raise ValueError(f"BTF type at offset {pos} runs past the type section")
        trailer = types[pos + 12 : end]
        if kind in _NAMED_ITEMS:  # name the members and enumerators up front
            for i in range(vlen):
                name(struct.unpack_from("<I", trailer, per * i)[0])
        table.append(BtfType(kind, name(name_off), size_or_type, vlen, bool(info >> 31), trailer))
        pos = end
    return TypeTable(table, names)


def _datasec_entries(typ: BtfType) -> list[tuple[int, int, int]]:
    """(var type id, byte offset, byte size) of each variable of a DATASEC."""
    return [(var, offset, size) for var, offset, size in struct.iter_unpack("<III", typ.trailer)]
