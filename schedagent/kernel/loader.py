"""Load, attach and detach sched_ext schedulers through libbpf.

The link fd is held in this process. If the process dies, the kernel closes
the fd and returns every task to EEVDF: that is the dead-man switch, so links
are never pinned. An attach counts only once ``state == enabled`` and
``root/ops`` shows our name, because enabling can fail after attach returns 0.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schedagent.errors import (
    FeatureMissing,
    ObjectRejection,
    SchedExtBusy,
    SchedulerExited,
    SchedulerLoadError,
    TunableError,
)
from schedagent.kernel import btf as kbtf
from schedagent.kernel import libbpf, scx

log = logging.getLogger(__name__)

#: Names under which a scheduler may expose its exit info (ours, and scx's UEI).
EXIT_INFO_VARS = ("sa_exit", "uei")
_REASON_LEN, _MSG_LEN = 128, 1024
# struct { s32 kind; s64 exit_code; char reason[128]; char msg[1024]; }
_EXIT_INFO_SIZE = 8 + 8 + _REASON_LEN + _MSG_LEN


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """What ``ops.exit`` recorded: the kernel's exit kind, code, reason and message."""

    kind: int
    exit_code: int
    reason: str
    message: str

    @property
    def kind_name(self) -> str:
        """Human name of the exit kind."""
        return scx.EXIT_KINDS.get(self.kind, f"kind {self.kind}")

    @property
    def is_error(self) -> bool:
        """Whether the kernel ejected the scheduler (kind >= SCX_EXIT_ERROR)."""
        return self.kind >= 1024


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to load one scheduler object."""

    tunables: dict[str, int]
    partial: bool = False
    timeout_ms: int | None = None
    enable_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class _Var:
    offset: int
    size: int


class BpfObject:
    """An opened (and later loaded) BPF object file."""

    def __init__(self, path: Path, policy: str) -> None:
        self.path, self.policy = path, policy
        lib = libbpf.lib()
        libbpf.capture()
        self._obj = lib.bpf_object__open_file(str(path).encode(), None)
        if not self._obj:
            err = libbpf.last_errno()
            raise SchedulerLoadError(
                policy,
                f"cannot open {path}: {libbpf.errno_text(err)}",
                "\n".join(libbpf.take_messages()[-20:]),
            )
        self._btf = lib.bpf_object__btf(self._obj)
        self._btf_raw = b""
        self._btf_types = kbtf.TypeTable([], {})
        self.ops_map = self._find_struct_ops()
        self.loaded = False

    # --- discovery -------------------------------------------------------------------

    def maps(self) -> dict[str, int]:
        """Map name -> ``struct bpf_map *`` for every map in the object."""
        lib, cur = libbpf.lib(), None
        found: dict[str, int] = {}
        while True:
            cur = lib.bpf_object__next_map(self._obj, cur)
            if not cur:
                return found
            found[lib.bpf_map__name(cur).decode()] = cur

    def _find_struct_ops(self) -> int:
        lib = libbpf.lib()
        ops = [
            m
            for m in self.maps().values()
            if lib.bpf_map__type(m) == libbpf.BPF_MAP_TYPE_STRUCT_OPS
        ]
        if len(ops) != 1:
            raise SchedulerLoadError(
                self.policy,
                f"expected one struct_ops map, found {len(ops)}",
                'define exactly one SEC(".struct_ops.link") struct sched_ext_ops',
            )
        return ops[0]

    def _types(self) -> kbtf.TypeTable:
        """The object's own BTF as a type table (empty without BTF), parsed again only
        when libbpf has changed the BTF since the last call."""
        size = ctypes.c_uint32(0)
        raw = libbpf.lib().btf__raw_data(self._btf, ctypes.byref(size)) if self._btf else None
        data = ctypes.string_at(raw, size.value) if raw else b""
        if data != self._btf_raw:
            self._btf_raw, self._btf_types = data, kbtf.parse_types(data)
        return self._btf_types

    def section_vars(self, section: str) -> dict[str, _Var]:
        """Variables of a data section (``.rodata``, ``.bss`` ...) from the object's BTF."""
        return {
            name: _Var(offset, size)
            for name, (offset, size) in self._types().section_vars(section).items()
        }

    def _section_map(self, section: str) -> int | None:
        for name, ptr in self.maps().items():
            if name.endswith(section):
                return ptr
        return None

    def _data(self, map_ptr: int) -> tuple[int, int]:
        size = ctypes.c_size_t(0)
        addr = libbpf.lib().bpf_map__initial_value(map_ptr, ctypes.byref(size))
        return addr or 0, size.value

    def rodata_names(self) -> list[str]:
        """Names of the ``const volatile`` tunables in ``.rodata``."""
        return sorted(self.section_vars(".rodata"))

    # --- before load -----------------------------------------------------------------

    def set_rodata(self, values: dict[str, int]) -> None:
        """Write validated tunables into ``.rodata`` before load."""
        available = self.section_vars(".rodata")
        rodata = self._section_map(".rodata")
        for key, value in values.items():
            var = available.get(key)
            if var is None or rodata is None:
                raise TunableError(
                    self.policy,
                    key,
                    f"the object has no const volatile {key}; tunables it has: "
                    f"{', '.join(sorted(available)) or '(none)'}",
                )
            addr, size = self._data(rodata)
            if var.offset + var.size > size or var.size not in (1, 2, 4, 8):
                raise TunableError(self.policy, key, f"unsupported rodata size {var.size}")
            lo, hi = (-(1 << (8 * var.size - 1)), (1 << (8 * var.size)) - 1)
            if not lo <= value <= hi:
                raise TunableError(self.policy, key, f"{value} does not fit in {var.size * 8} bits")
            raw = value.to_bytes(var.size, "little", signed=value < 0)
            ctypes.memmove(addr + var.offset, raw, var.size)

    def _ops_member(self, member: str) -> tuple[int, int]:
        """(byte offset, byte size) of a field of struct sched_ext_ops, checked.

        The layout comes from the running kernel's BTF, never from the object's own:
        a source declaring its own ``struct sched_ext_ops`` with fake offsets made the
        loader read and write out of bounds (issue 12). The object's layout must
        agree with it, and the field must lie inside the struct_ops initial value.
        """
        want = kbtf.load().ops_layout.get(member)
        if want is None:
            raise FeatureMissing(
                f"sched_ext_ops.{member}",
                "the field is not in this kernel's BTF",
                "use a kernel with that sched_ext feature",
            )
        _, value_size = self._ops_data()
        check_ops_member(
            str(self.path), member, self._object_ops_layout().get(member), want, value_size
        )
        return want

    def _object_ops_layout(self) -> dict[str, tuple[int, int]]:
        """Member layout of the struct the object's struct_ops map really has."""
        table = self._types()
        type_id = libbpf.lib().bpf_map__btf_value_type_id(self.ops_map)
        if not len(table) or not type_id:
            return {}
        return table.layout(table.skip_mods(type_id))

    def _ops_data(self) -> tuple[int, int]:
        addr, size = self._data(self.ops_map)
        if not addr:
            raise FeatureMissing(
                "struct_ops initial value access",
                "bpf_map__initial_value() returned NULL for the struct_ops map",
                "install libbpf 1.3 or newer",
            )
        return addr, size

    def ops_name(self) -> str:
        """The ``.name`` the scheduler will register under (what root/ops shows)."""
        addr, _ = self._ops_data()
        offset, size = self._ops_member("name")
        return ctypes.string_at(addr + offset, size).split(b"\0")[0].decode()

    def set_ops_field(self, member: str, value: int, *, bit_or: bool = False) -> None:
        """Write an integer field of the struct_ops data (flags, timeout_ms)."""
        addr, _ = self._ops_data()
        offset, size = self._ops_member(member)
        current = int.from_bytes(ctypes.string_at(addr + offset, size), "little")
        new = (current | value) if bit_or else value
        ctypes.memmove(addr + offset, new.to_bytes(size, "little"), size)

    # --- load / after load --------------------------------------------------------------

    def load(self) -> None:
        """Load every program through the kernel verifier (no attach)."""
        libbpf.capture()
        ret = libbpf.lib().bpf_object__load(self._obj)
        messages = libbpf.take_messages()
        if ret != 0:
            err = libbpf.last_errno(ret)
            raise SchedulerLoadError(
                self.policy,
                f"the kernel refused the program: {libbpf.errno_text(err)}",
                _log_tail(messages),
            )
        self.loaded = True

    def read_var(self, section: str, name: str) -> bytes | None:
        """Live bytes of a global variable (``.bss``/``.data`` are mmapped after load)."""
        var = self.section_vars(section).get(name)
        sec_map = self._section_map(section)
        if var is None or sec_map is None:
            return None
        addr, size = self._data(sec_map)
        if not addr or var.offset + var.size > size:
            return None
        return ctypes.string_at(addr + var.offset, var.size)

    def exit_info(self) -> ExitInfo | None:
        """The exit info recorded by ``ops.exit``, or None if it has not run."""
        for section in (".bss", ".data"):
            for name in EXIT_INFO_VARS:
                raw = self.read_var(section, name)
                if raw is None or len(raw) < _EXIT_INFO_SIZE:
                    continue
                kind, code = struct.unpack_from("<iq", raw, 0)
                if kind == 0:
                    return None
                reason = raw[16 : 16 + _REASON_LEN].split(b"\0")[0].decode(errors="replace")
                msg = raw[16 + _REASON_LEN : _EXIT_INFO_SIZE].split(b"\0")[0]
                return ExitInfo(kind, code, reason, msg.decode(errors="replace"))
        return None

    def percpu_stats(self, map_name: str = "sa_stats") -> list[int]:
        """Sum a per-CPU array of u64 counters over CPUs; empty when absent."""
        lib = libbpf.lib()
        bmap = self.maps().get(map_name)
        if bmap is None or not self.loaded:
            return []
        ncpu = lib.libbpf_num_possible_cpus()
        # a PERCPU_ARRAY value is one u64 slot per possible CPU.
        vsize = lib.bpf_map__value_size(bmap)
        n_slots = vsize // 8
        sums: list[int] = []
        key = ctypes.c_uint32(0)
        buf = (ctypes.c_uint64 * (n_slots * ncpu))()
        ret = lib.bpf_map__lookup_elem(bmap, ctypes.byref(key), 4, buf, ctypes.sizeof(buf), 0)
        if ret != 0:
            return []
        for slot in range(n_slots):
            sums.append(sum(buf[cpu * n_slots + slot] for cpu in range(ncpu)))
        return sums

    def update_map(self, map_name: str, key: bytes, value: bytes) -> None:
        """Write one entry of a map (the engine's target maps)."""
        lib = libbpf.lib()
        bmap = self.maps().get(map_name)
        if bmap is None:
            raise SchedulerLoadError(self.policy, f"the object has no map {map_name}", "")
        kbuf, vbuf = ctypes.create_string_buffer(key), ctypes.create_string_buffer(value)
        ret = lib.bpf_map__update_elem(bmap, kbuf, len(key), vbuf, len(value), 0)
        if ret != 0:
            err = libbpf.last_errno(ret)
            raise SchedulerLoadError(
                self.policy, f"updating {map_name}: {libbpf.errno_text(err)}", ""
            )

    def close(self) -> None:
        """Close the object and every fd it holds."""
        if self._obj:
            libbpf.lib().bpf_object__close(self._obj)
            self._obj = None


def check_ops_member(
    source: str, member: str, have: tuple[int, int] | None, want: tuple[int, int], value_size: int
) -> None:
    """Refuse unless the object's ``member`` is where the kernel has it, inside the value.

    ``have`` and ``want`` are (byte offset, byte size) in the object's and the
    kernel's ``struct sched_ext_ops``; ``value_size`` is the size of the struct_ops
    initial value the loader reads and writes.
    """
    offset, size = want
    if have != want or offset + size > value_size:
        found = f"offset {have[0]} size {have[1]}" if have else "no such member"
        raise ObjectRejection(
            source,
            "ops layout",
            f"sched_ext_ops.{member} at {found} in a {value_size}-byte struct_ops value",
            f"the running kernel's offset {offset} size {size}",
        )


def _log_tail(messages: list[str], lines: int = 40) -> str:
    text = "".join(messages)
    return "\n".join(text.splitlines()[-lines:])


class AttachedScheduler:
    """A scheduler whose struct_ops link is held by this process."""

    def __init__(self, obj: BpfObject, link: int, name: str, enable_seq: int) -> None:
        self.obj, self.name, self.enable_seq = obj, name, enable_seq
        self._link: int | None = link

    @property
    def attached(self) -> bool:
        """Whether we still hold the link."""
        return self._link is not None

    def is_ours(self, snap: scx.ScxState) -> bool:
        """Whether a sysfs snapshot shows our scheduler enabled."""
        return snap.is_enabled and snap.ops == self.name and snap.enable_seq == self.enable_seq

    def detach(self, timeout_s: float = 5.0) -> scx.ScxState:
        """Destroy the link and wait for ``state == disabled`` (or a foreign scheduler)."""
        if self._link is not None:
            libbpf.lib().bpf_link__destroy(self._link)
            self._link = None
        ok, snap = scx.wait_for(lambda s: not self.is_ours(s) and s.state != "disabling", timeout_s)
        if not ok:
            log.warning("%s: state %s after detach timeout", self.name, snap.state)
        return snap


def attach(
    obj: BpfObject, options: LoadOptions, before_attach: Callable[[BpfObject], None] | None = None
) -> AttachedScheduler:
    """Load ``obj`` with ``options`` and attach it; return once it is really enabled.

    ``before_attach`` runs after the verifier accepted the object, when its maps
    exist, and before the scheduler goes live (the engine fills maps there).
    """
    before = scx.read_state()
    if not before.present:
        raise FeatureMissing(
            "sched_ext",
            "/sys/kernel/sched_ext does not exist",
            "boot a kernel with CONFIG_SCHED_CLASS_EXT=y (>= 6.12), or run in "
            "the testbed: schedagent sandbox run",
        )
    if before.state != "disabled":
        raise SchedExtBusy(before.ops)
    name = obj.ops_name()
    obj.set_rodata(options.tunables)
    if options.partial:
        flag = kbtf.load().enums.get("SCX_OPS_SWITCH_PARTIAL")
        if flag is None:
            raise FeatureMissing(
                "SCX_OPS_SWITCH_PARTIAL",
                "not in this kernel's BTF",
                "use a kernel with sched_ext partial mode",
            )
        obj.set_ops_field("flags", flag, bit_or=True)
    if options.timeout_ms is not None:
        obj.set_ops_field("timeout_ms", options.timeout_ms)
    if not obj.loaded:
        obj.load()
    if before_attach is not None:
        before_attach(obj)
    link = libbpf.lib().bpf_map__attach_struct_ops(obj.ops_map)
    if not link:
        err = libbpf.last_errno()
        messages = libbpf.take_messages()
        if err in (errno.EBUSY, errno.EEXIST):
            raise SchedExtBusy(scx.read_state().ops)
        raise SchedulerLoadError(
            name, f"attach failed: {libbpf.errno_text(err)}", _log_tail(messages)
        )
    ok, snap = scx.wait_for(
        lambda s: (
            (s.is_enabled and s.ops == name)
            or s.state == "disabled"
            and s.enable_seq > before.enable_seq
        ),
        options.enable_timeout_s,
    )
    if ok and snap.is_enabled and snap.ops == name:
        log.info("attached %s enable_seq=%d partial=%s", name, snap.enable_seq, options.partial)
        return AttachedScheduler(obj, link, name, snap.enable_seq)
    libbpf.lib().bpf_link__destroy(link)
    scx.wait_for(lambda s: s.state == "disabled", 5.0)
    info = _wait_exit_info(obj)
    if info is not None:
        raise SchedulerExited(name, info.kind, info.kind_name, info.reason, info.message)
    raise SchedulerLoadError(
        name,
        f"not enabled within {options.enable_timeout_s:.1f} s "
        f"(state {snap.state}, root/ops {snap.ops})",
        "",
    )


def _wait_exit_info(obj: BpfObject, timeout_s: float = 1.0) -> ExitInfo | None:
    deadline = time.monotonic() + timeout_s
    while True:
        info = obj.exit_info()
        if info is not None or time.monotonic() > deadline:
            return info
        time.sleep(0.01)
