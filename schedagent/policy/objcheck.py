"""The object check: the security boundary between a proposed scheduler and the kernel.

Source text can be disguised (macros, token pasting, string concatenation, casts
of helper numbers); the ELF that clang produced cannot, because it is exactly
what libbpf will hand to the kernel. So after compiling, and before anything is
loaded, every section, symbol, relocation, BTF-defined map and instruction of
the object is checked against :mod:`schedagent.policy.allowlist`:

- exactly one struct_ops variable, in ``.struct_ops.link`` (so it attaches as a
  link the daemon holds), whose BTF type is ``struct sched_ext_ops`` with the
  running kernel's layout;
- executable code only in ``struct_ops/`` and ``struct_ops.s/`` sections (plus
  ``.text`` subprograms they call), and every program referenced by that map;
- every ``call``: helpers by id, kfuncs by relocation against allow-listed
  ``__ksym`` externs that the running kernel's BTF has; no raw BTF-id calls, no
  indirect calls, no pseudo map-fd/BTF-id loads that bypass relocation;
- maps of allow-listed types, unpinned, with bounded sizes.

Before that, :func:`check_ir` reads the LLVM IR clang made of the source (the
compile box compiles exactly that IR): assembly is refused there, because an
assembler directive (``.incbin``, ``.include``, ``.section .BTF``) can pull any
file root can read into the object, or forge the BTF every later check trusts.

Every refusal is an :class:`~schedagent.errors.ObjectRejection` naming what was found.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section, Symbol, SymbolTableSection

from schedagent.errors import ObjectRejection
from schedagent.kernel import btf as kbtf
from schedagent.policy import allowlist

_EM_BPF = 247
_SHF_EXECINSTR = 0x4
_PROG_SECTION = re.compile(r"^struct_ops(\.s)?/\w+$")
_DATA_SECTION = re.compile(r"^\.(rodata|data|bss)(\.[\w.]+)?$")
_META_SECTION = re.compile(
    r"^(license|version|\.maps|\.struct_ops\.link|\.BTF|\.BTF\.ext|\.symtab|\.strtab"
    r"|\.shstrtab|\.llvm_addrsig|\.addrsig|\.debug_\w+|\.note\.GNU-stack)$"
)
#: Sections of other kinds of program, named in refusals so the reason is plain.
_PROGRAM_KINDS = (
    "kprobe",
    "kretprobe",
    "uprobe",
    "uretprobe",
    "tracepoint",
    "tp",
    "raw_tracepoint",
    "raw_tp",
    "fentry",
    "fexit",
    "fmod_ret",
    "lsm",
    "iter",
    "xdp",
    "tc",
    "classifier",
    "cgroup",
    "socket",
    "sk_",
    "perf_event",
    "usdt",
    "syscall",
    "tp_btf",
    "ksyscall",
    "struct_ops",
)
_HELPERS_ALLOWED = (
    "the helpers in schedagent/policy/allowlist.py: map access, clocks, "
    "task/cgroup storage, probe_read_kernel, printk, loop, spin locks"
)
_OPS_MEMBERS = ("name", "flags", "timeout_ms")
#: A scheduler's map holds per-task or per-CPU state; these bound kernel memory.
MAX_MAP_ENTRIES = 1 << 20
MAX_DATA_SECTION_BYTES = 16 << 20
#: Helpers refused often enough to name them even without the kernel's BTF at hand.
_KNOWN_HELPERS = {
    4: "bpf_probe_read",
    12: "bpf_tail_call",
    36: "bpf_probe_write_user",
    58: "bpf_override_return",
    109: "bpf_send_signal",
    112: "bpf_probe_read_user",
    117: "bpf_send_signal_thread",
    166: "bpf_d_path",
    186: "bpf_sys_bpf",
    191: "bpf_kallsyms_lookup_name",
}


#: Inline asm in textual IR: ``asm [sideeffect] [alignstack] [inteldialect] [unwind] "T"``.
#: IR string literals hex-escape ``"`` (``\\22``), so the template ends at the next quote.
_IR_INLINE_ASM = re.compile(
    r"\basm\s+(?:(?:sideeffect|alignstack|inteldialect|unwind)\s+)*"
    r'"([^"]*)"'
)
_IR_MODULE_ASM = re.compile(r"^module\s+asm\b", re.MULTILINE)
#: A declaration renamed with an asm label (``int x asm("name")``): ``@"\01name"``.
_IR_ASM_LABEL = re.compile(r'[@%]"\\01')
_ASM_ALLOWED = (
    "empty asm templates only (barrier(), barrier_var()); no file-scope asm, no asm labels"
)


def check_ir(ir: str, source: str) -> None:
    """Refuse IR holding assembly: the compile box runs this between clang's two stages.

    Whatever spelled it (token pasting, a macro, ``__asm__``), asm reaches the IR as
    ``module asm`` or an ``asm`` call; only an empty template (a compiler barrier)
    passes, since an assembler directive can read host files into the object.
    """
    module = _IR_MODULE_ASM.search(ir)
    if module:
        line = ir[module.start() : ir.find("\n", module.start())]
        raise ObjectRejection(
            source, "inline assembly", f"file-scope asm ({_shown(line)})", _ASM_ALLOWED
        )
    for match in _IR_INLINE_ASM.finditer(ir):
        if match[1]:
            calls = [
                f"helper {n} ({_helper_name(int(n))})"
                for n in re.findall(r"\bcall\s+(\d{1,9})\b", match[1])
            ]
            note = f", a call to {', '.join(calls)}" if calls else ""
            raise ObjectRejection(
                source, "inline assembly", f"asm template {_shown(match[1])!r}{note}", _ASM_ALLOWED
            )
    if _IR_ASM_LABEL.search(ir):
        raise ObjectRejection(
            source, "inline assembly", "a symbol renamed with an asm label", _ASM_ALLOWED
        )


def _helper_name(number: int) -> str:
    return _KNOWN_HELPERS.get(number) or allowlist.HELPER_NAMES.get(number, "unknown")


def _shown(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True, slots=True)
class KernelView:
    """What the object check needs to know about the running kernel (from its BTF)."""

    funcs: frozenset[str]
    ops_layout: dict[str, tuple[int, int]]
    helper_names: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_index(cls, index: kbtf.BtfIndex) -> KernelView:
        """The view of a parsed kernel BTF index."""
        helpers = {
            v: "bpf_" + k.removeprefix("BPF_FUNC_").lower()
            for k, v in index.enums.items()
            if k.startswith("BPF_FUNC_")
        }
        return cls(index.funcs, index.ops_layout, helpers)


@dataclass(frozen=True, slots=True)
class ObjectReport:
    """What an accepted object holds."""

    ops_var: str
    programs: tuple[str, ...]
    helpers: tuple[str, ...]
    kfuncs: tuple[str, ...]
    maps: tuple[str, ...]
    #: the ``struct sched_ext_ops`` callbacks the object sets (``enqueue``, ``cgroup_init``...)
    ops_members: tuple[str, ...] = ()


@dataclass(slots=True)
class _Elf:
    source: str
    sections: list[Section]
    symbols: list[Symbol]
    relocs: dict[int, dict[int, Symbol]]  # target section index -> offset -> symbol
    types: kbtf.TypeTable
    exec_idx: set[int]


def check_object(path: Path, source: str, kernel: KernelView | None) -> ObjectReport:
    """Check a compiled scheduler object; return what it holds or raise ObjectRejection.

    ``kernel`` is None only where no kernel BTF exists (then kfunc presence and the
    ops layout cannot be compared, and everything else is still checked).
    """
    try:
        # read into memory: sections are read lazily, after this function's checks begin
        elf = _read(ELFFile(io.BytesIO(path.read_bytes())), source)
        ops_var = _check_struct_ops(elf, kernel)
        programs = _check_programs(elf)
        members = _ops_members(elf)
        maps = _check_maps(elf)
        helpers, called = _check_code(elf, kernel)
        kfuncs = _check_externs(elf, kernel, called)
    except (
        ELFError,
        ValueError,
        struct.error,
        KeyError,
        IndexError,
        StopIteration,
        UnicodeDecodeError,
    ) as err:
        # a malformed ELF or BTF is a refusal, never a crash (and never echoes its bytes)
        raise ObjectRejection(
            source,
            "malformed object",
            f"an ELF or BTF that cannot be read ({type(err).__name__})",
            "clang's BPF output",
        ) from err
    return ObjectReport(
        ops_var, programs, tuple(sorted(helpers)), tuple(sorted(kfuncs)), maps, members
    )


def _read(elf: ELFFile, source: str) -> _Elf:
    if elf["e_machine"] != "EM_BPF" and elf.header["e_machine"] != _EM_BPF:
        raise ObjectRejection(source, "not a BPF object", f"e_machine {elf['e_machine']}", "EM_BPF")
    sections = list(elf.iter_sections())
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise ObjectRejection(source, "malformed object", "no .symtab", "clang's BPF output")
    symbols = list(symtab.iter_symbols())
    exec_idx: set[int] = set()
    relocs: dict[int, dict[int, Symbol]] = {}
    for idx, sec in enumerate(sections):
        name = sec.name
        if idx == 0:
            continue
        if sec["sh_flags"] & _SHF_EXECINSTR:
            if name != ".text" and not _PROG_SECTION.match(name):
                raise ObjectRejection(
                    source,
                    "program type not allowed",
                    f"code in section {name!r}{_kind_note(name)}",
                    "struct_ops/<op> and struct_ops.s/<op> programs",
                )
            exec_idx.add(idx)
        elif isinstance(sec, RelocationSection):
            table = relocs.setdefault(sec["sh_info"], {})
            for rel in sec.iter_relocations():
                table[rel["r_offset"]] = symbols[rel["r_info_sym"]]
        elif name == ".struct_ops":
            raise ObjectRejection(
                source,
                "struct_ops not attached as a link",
                'a SEC(".struct_ops") map (it would be registered without '
                "a link the daemon holds, so it outlives the daemon)",
                'SEC(".struct_ops.link")',
            )
        elif _DATA_SECTION.match(name):
            if sec["sh_size"] > MAX_DATA_SECTION_BYTES:
                raise ObjectRejection(
                    source,
                    "data section too large",
                    f"{name} of {sec['sh_size']} bytes",
                    f"at most {MAX_DATA_SECTION_BYTES} bytes",
                )
        elif not _META_SECTION.match(name):
            raise ObjectRejection(
                source,
                "section not allowed",
                f"section {name!r}{_kind_note(name)}",
                ".struct_ops.link, .maps, license, "
                ".rodata/.data/.bss, struct_ops programs and BTF/debug info",
            )
    btf_sec = elf.get_section_by_name(".BTF")
    if btf_sec is None:
        raise ObjectRejection(
            source, "no BTF", "an object without a .BTF section", "objects built with -g"
        )
    data = btf_sec.data()
    _check_btf_blob(source, data)
    return _Elf(source, sections, symbols, relocs, kbtf.parse_types(data), exec_idx)


def _check_btf_blob(source: str, data: bytes) -> None:
    """The .BTF section must be exactly the one blob its header describes.

    Assembly appending a second ``.section .BTF`` ahead of clang's made an object
    whose header (and so every type and name the checks and libbpf read) was the
    attacker's, with clang's real BTF trailing unread.
    """
    if len(data) < 24:
        raise ValueError("BTF too short")
    _magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
    type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
    end = hdr_len + max(type_off + type_len, str_off + str_len)
    if hdr_len < 24 or end != len(data):
        raise ObjectRejection(
            source,
            "malformed BTF",
            f"a .BTF section of {len(data)} bytes whose header describes {end}",
            "one BTF blob, as clang emits it",
        )


def _kind_note(name: str) -> str:
    head = name.split("/")[0].split(".")[0]
    for kind in _PROGRAM_KINDS:
        if head.startswith(kind) and kind != "struct_ops":
            return f" (a {kind} program)"
    return ""


def _check_struct_ops(elf: _Elf, kernel: KernelView | None) -> str:
    types = elf.types
    sec_id = types.find(".struct_ops.link", kbtf.KIND_DATASEC)
    variables = types.members(sec_id) if sec_id else []
    link_idx = [i for i, s in enumerate(elf.sections) if s.name == ".struct_ops.link"]
    symbols = [
        s
        for s in elf.symbols
        if link_idx and s["st_shndx"] == link_idx[0] and s["st_info"]["type"] == "STT_OBJECT"
    ]
    if len(variables) != 1 or len(symbols) != 1:
        found = ", ".join(v.name for v in variables) or "none"
        raise ObjectRejection(
            elf.source,
            "exactly one struct_ops map",
            f"{max(len(variables), len(symbols))} variables in .struct_ops.link ({found})",
            'one SEC(".struct_ops.link") struct sched_ext_ops',
        )
    var = variables[0]
    type_id = types.skip_mods(types.get(var.type_id).size_or_type)
    typ = types.get(type_id)
    if typ.kind != kbtf.KIND_STRUCT or typ.name != kbtf.OPS_STRUCT:
        raise ObjectRejection(
            elf.source,
            "struct_ops of another subsystem",
            f"{var.name} of type struct {typ.name or '(anonymous)'}",
            f"struct {kbtf.OPS_STRUCT}",
        )
    if kernel is not None and kernel.ops_layout:
        _check_layout(elf.source, types.layout(type_id), types.size(type_id), kernel)
    return var.name


def _check_layout(
    source: str, layout: dict[str, tuple[int, int]], size: int, kernel: KernelView
) -> None:
    """The object's struct sched_ext_ops must be the kernel's, member by member."""
    for member in _OPS_MEMBERS:
        if member not in layout:
            raise ObjectRejection(
                source,
                "ops layout",
                f"struct sched_ext_ops without {member}",
                "the layout in the running kernel's BTF",
            )
    for member, (offset, msize) in layout.items():
        want = kernel.ops_layout.get(member)
        if want is None and member not in _OPS_MEMBERS:
            continue  # libbpf refuses a non-zero member the kernel lacks at load time
        if want != (offset, msize) or offset + msize > size:
            expected = f"offset {want[0]} size {want[1]}" if want else "no such member"
            raise ObjectRejection(
                source,
                "ops layout",
                f"sched_ext_ops.{member} at offset {offset} size {msize} (struct size {size})",
                f"the running kernel's {expected}",
            )


def _ops_members(elf: _Elf) -> tuple[str, ...]:
    """The ops members holding a program: the relocations of ``.struct_ops.link`` at each
    member's offset (the one variable's offset in the section plus the member's)."""
    types = elf.types
    sec_id = types.find(".struct_ops.link", kbtf.KIND_DATASEC)
    var = types.members(sec_id)[0]  # _check_struct_ops made sure there is exactly one
    type_id = types.skip_mods(types.get(var.type_id).size_or_type)
    link_idx = next(i for i, s in enumerate(elf.sections) if s.name == ".struct_ops.link")
    relocated = elf.relocs.get(link_idx, {})
    base = var.bit_offset // 8
    return tuple(
        sorted(
            m for m, (offset, _size) in types.layout(type_id).items() if base + offset in relocated
        )
    )


def _functions(elf: _Elf, section_idx: int) -> list[Symbol]:
    return [
        s
        for s in elf.symbols
        if s["st_shndx"] == section_idx and s["st_info"]["type"] == "STT_FUNC"
    ]


def _check_programs(elf: _Elf) -> tuple[str, ...]:
    link_idx = next(i for i, s in enumerate(elf.sections) if s.name == ".struct_ops.link")
    referenced: set[str] = set()
    for sym in elf.relocs.get(link_idx, {}).values():
        sec = sym["st_shndx"]
        if (
            not isinstance(sec, int)
            or sym["st_info"]["type"] != "STT_FUNC"
            or not _PROG_SECTION.match(elf.sections[sec].name)
        ):
            raise ObjectRejection(
                elf.source,
                "struct_ops member",
                f"the ops map points at {sym.name or 'a section'} which is "
                "not a struct_ops program",
                "struct_ops/<op> programs",
            )
        referenced.add(sym.name)
    programs: list[str] = []
    for idx in sorted(elf.exec_idx):
        sec = elf.sections[idx]
        if sec.name == ".text":
            continue
        for sym in _functions(elf, idx):
            if sym.name not in referenced:
                raise ObjectRejection(
                    elf.source,
                    "program not referenced by the ops map",
                    f"{sym.name} in section {sec.name!r}",
                    "struct_ops programs named in the sched_ext_ops",
                )
            programs.append(sym.name)
    return tuple(programs)


def _map_field(types: kbtf.TypeTable, member: kbtf.Member) -> int | None:
    """The value of a ``__uint(name, value)`` map field: ``int (*name)[value]``."""
    typ = types.get(types.skip_mods(member.type_id))
    if typ.kind != kbtf.KIND_PTR:
        return None
    return types.array_len(typ.size_or_type)


def _check_maps(elf: _Elf) -> tuple[str, ...]:
    types = elf.types
    sec_id = types.find(".maps", kbtf.KIND_DATASEC)
    names: list[str] = []
    for var in types.members(sec_id) if sec_id else []:
        def_id = types.skip_mods(types.get(var.type_id).size_or_type)
        members = {m.name: m for m in types.members(def_id)} if def_id else {}
        map_type = _map_field(types, members["type"]) if "type" in members else None
        if map_type not in allowlist.MAP_TYPES:
            kind = allowlist.REFUSED_MAP_TYPES.get(map_type or 0, f"type {map_type}")
            raise ObjectRejection(
                elf.source,
                "map type not allowed",
                f"map {var.name} of type BPF_MAP_TYPE_{kind}",
                ", ".join(sorted(allowlist.MAP_TYPES.values())),
            )
        if "pinning" in members and _map_field(types, members["pinning"]):
            raise ObjectRejection(
                elf.source,
                "pinned map",
                f"map {var.name} pinned to bpffs (LIBBPF_PIN_BY_NAME)",
                "unpinned maps, which die with the scheduler",
            )
        for forbidden in ("values", "inner_map_idx"):
            if forbidden in members:
                raise ObjectRejection(
                    elf.source,
                    "map initialiser not allowed",
                    f"map {var.name} with .{forbidden}",
                    "plain maps without prog/map references",
                )
        entries = _map_field(types, members["max_entries"]) if "max_entries" in members else 0
        if entries and entries > MAX_MAP_ENTRIES:
            raise ObjectRejection(
                elf.source,
                "map too large",
                f"map {var.name} with max_entries {entries}",
                f"at most {MAX_MAP_ENTRIES} entries",
            )
        names.append(var.name)
    return tuple(names)


def _check_externs(elf: _Elf, kernel: KernelView | None, called: set[str]) -> set[str]:
    """Every undefined symbol must be an allow-listed kfunc the kernel has.

    A weak extern may be absent when it is only tested (``bpf_ksym_exists``); one that
    is called must exist (bpftool's vmlinux.h declares every kfunc weak).
    """
    types = elf.types
    btf_funcs = {t.name for t in types.types if t.kind == kbtf.KIND_FUNC}
    used: set[str] = set()
    for sym in elf.symbols:
        if sym["st_shndx"] != "SHN_UNDEF" or not sym.name:
            continue
        base = allowlist.kfunc_base(sym.name)
        if sym.name not in btf_funcs:
            raise ObjectRejection(
                elf.source,
                "extern symbol not allowed",
                f"extern variable {sym.name} (__ksym/__kconfig)",
                "allow-listed kfuncs only",
            )
        if base not in allowlist.KFUNCS:
            raise ObjectRejection(
                elf.source,
                "kfunc not allowed",
                f"kfunc {sym.name}",
                "the sched_ext and cpumask/task/"
                "cgroup reference kfuncs in schedagent/policy/allowlist.py",
            )
        if (
            kernel is not None
            and base not in kernel.funcs
            and (sym.name in called or sym["st_info"]["bind"] != "STB_WEAK")
        ):
            raise ObjectRejection(
                elf.source,
                "kfunc missing from the running kernel",
                f"kfunc {sym.name}",
                "kfuncs in /sys/kernel/btf/vmlinux",
            )
        used.add(base)
    return used


def _insns(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(byte offset, opcode, src_reg, imm) of each instruction; ld_imm64 takes two slots."""
    pos = 0
    while pos + 8 <= len(data):
        code, regs, _off, imm = struct.unpack_from("<BBhi", data, pos)
        yield pos, code, regs >> 4, imm
        pos += 16 if code == 0x18 else 8


def _owner(elf: _Elf, idx: int, offset: int) -> str:
    for sym in _functions(elf, idx):
        if sym["st_value"] <= offset < sym["st_value"] + max(sym["st_size"], 1):
            return f"{sym.name} in {elf.sections[idx].name!r}"
    return repr(elf.sections[idx].name)


def _check_code(elf: _Elf, kernel: KernelView | None) -> tuple[set[str], set[str]]:
    """Every call and 64-bit load in every executable section: (helpers, called externs)."""
    names = {**_KNOWN_HELPERS, **(kernel.helper_names if kernel else {}), **allowlist.HELPER_NAMES}
    helpers: set[str] = set()
    called: set[str] = set()
    for idx in sorted(elf.exec_idx):
        sec = elf.sections[idx]
        data = sec.data()
        if len(data) % 8:
            raise ObjectRejection(
                elf.source,
                "malformed object",
                f"{sec.name!r} of {len(data)} bytes",
                "whole instructions",
            )
        relocs = elf.relocs.get(idx, {})
        for pos, code, src, imm in _insns(data):
            sym = relocs.get(pos)
            if code == 0x85:  # BPF_JMP | BPF_CALL
                if sym is not None:
                    _check_call_target(elf, sym, idx, pos)
                    called.add(sym.name)
                elif src == 0:
                    if imm not in allowlist.HELPER_NAMES:
                        raise ObjectRejection(
                            elf.source,
                            "helper not allowed",
                            f"call to helper {imm} ({names.get(imm, 'unknown')}) in "
                            f"{_owner(elf, idx, pos)}",
                            _HELPERS_ALLOWED,
                        )
                    helpers.add(allowlist.HELPER_NAMES[imm])
                elif src != 1:  # 1: a call to a subprogram of the same section
                    raise ObjectRejection(
                        elf.source,
                        "raw call not allowed",
                        f"call with src_reg {src} imm {imm} (a kfunc by BTF "
                        f"id, bypassing relocation) in "
                        f"{_owner(elf, idx, pos)}",
                        "helpers by id and kfuncs through __ksym externs",
                    )
            elif code == 0x8D:  # BPF_JMP | BPF_CALL | BPF_X
                raise ObjectRejection(
                    elf.source,
                    "indirect call not allowed",
                    f"callx in {_owner(elf, idx, pos)}",
                    "direct calls",
                )
            elif code == 0x18:  # BPF_LD | BPF_IMM | BPF_DW
                if sym is not None:
                    _check_load_target(elf, sym, idx, pos)
                elif src != 0:
                    raise ObjectRejection(
                        elf.source,
                        "raw pseudo load not allowed",
                        f"ld_imm64 with src_reg {src} imm {imm} (a map fd or "
                        f"kernel BTF id) in {_owner(elf, idx, pos)}",
                        "maps and functions referenced by name",
                    )
    return helpers, called


def _check_call_target(elf: _Elf, sym: Symbol, idx: int, pos: int) -> None:
    shndx = sym["st_shndx"]
    if shndx == "SHN_UNDEF":
        return  # a kfunc extern: _check_externs vetted every undefined symbol
    if isinstance(shndx, int) and shndx in elf.exec_idx:
        return  # a subprogram (static function) in code that is itself checked
    raise ObjectRejection(
        elf.source,
        "call target not allowed",
        f"call to {sym.name or 'a data section'} in {_owner(elf, idx, pos)}",
        "helpers, kfuncs and the object's own functions",
    )


def _check_load_target(elf: _Elf, sym: Symbol, idx: int, pos: int) -> None:
    shndx = sym["st_shndx"]
    if shndx == "SHN_UNDEF" or (isinstance(shndx, int) and shndx in elf.exec_idx):
        return  # a kfunc address (bpf_ksym_exists) or a callback for bpf_loop
    if isinstance(shndx, int):
        name = elf.sections[shndx].name
        if name == ".maps" or _DATA_SECTION.match(name):
            return
    raise ObjectRejection(
        elf.source,
        "reference not allowed",
        f"load of {sym.name or 'a section'} in {_owner(elf, idx, pos)}",
        "the object's maps, data sections and functions",
    )
