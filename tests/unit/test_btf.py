"""The BTF reader finds kfuncs, their argument counts and enum constants."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from schedagent.kernel import btf


def _blob(types: bytes, strings: bytes) -> bytes:
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def _type(name_off: int, kind: int, vlen: int, size_or_type: int, flag: bool = False) -> bytes:
    return struct.pack("<III", name_off, (flag << 31) | (kind << 24) | vlen, size_or_type)


def _sample() -> bytes:
    strings = b"\0scx_bpf_dsq_move_to_local\0dsq\0flags\0SCX_OPS_SWITCH_PARTIAL\0scx_enq\0"
    off = {
        s: strings.index(s.encode() + b"\0")
        for s in ("scx_bpf_dsq_move_to_local", "dsq", "flags", "SCX_OPS_SWITCH_PARTIAL", "scx_enq")
    }
    types = b"".join(
        [
            _type(0, 1, 0, 8) + struct.pack("<I", 64),  # 1: INT u64
            _type(0, 13, 2, 1)
            + struct.pack("<II", off["dsq"], 1)  # 2: FUNC_PROTO
            + struct.pack("<II", off["flags"], 1),
            _type(off["scx_bpf_dsq_move_to_local"], 12, 1, 2),  # 3: FUNC -> 2
            _type(off["scx_enq"], 6, 1, 4) + struct.pack("<Ii", off["SCX_OPS_SWITCH_PARTIAL"], 8),
        ]
    )
    return _blob(types, strings)


def test_parse_finds_funcs_arity_and_enums() -> None:
    index = btf.parse(_sample())
    assert index.has_func("scx_bpf_dsq_move_to_local")
    assert index.func_nargs("scx_bpf_dsq_move_to_local") == 2
    assert index.enums["SCX_OPS_SWITCH_PARTIAL"] == 8
    assert not index.has_func("scx_bpf_dispatch")


def _sections_and_enums() -> bytes:
    strings = b"\0.rodata\0slice_ns\0nr_queues\0u64\0NEG\0BIG\0"
    off = {
        s: strings.index(b"\0" + s.encode() + b"\0") + 1
        for s in (".rodata", "slice_ns", "nr_queues", "u64", "NEG", "BIG")
    }
    types = b"".join(
        [
            _type(off["u64"], btf.KIND_INT, 0, 8) + struct.pack("<I", 64),  # 1: u64
            _type(off["slice_ns"], btf.KIND_VAR, 0, 1) + struct.pack("<I", 1),  # 2: VAR
            _type(off["nr_queues"], btf.KIND_VAR, 0, 1) + struct.pack("<I", 1),  # 3: VAR
            _type(off[".rodata"], btf.KIND_DATASEC, 2, 16)  # 4: DATASEC
            + struct.pack("<III", 2, 0, 8)
            + struct.pack("<III", 3, 8, 8),
            _type(0, btf.KIND_ENUM, 1, 4, flag=True) + struct.pack("<Ii", off["NEG"], -3),
            _type(0, btf.KIND_ENUM64, 1, 8) + struct.pack("<III", off["BIG"], 5, 1),
        ]
    )
    return _blob(types, strings)


def test_the_type_table_reads_data_sections_and_enumerators() -> None:
    """Issue 15: the loader reads an object's .rodata/.bss variables through this table
    (it had its own BTF walk with magic kind numbers), and parse() its enumerators."""
    table = btf.parse_types(_sections_and_enums())
    assert table.section_vars(".rodata") == {"slice_ns": (0, 8), "nr_queues": (8, 8)}
    assert table.section_vars(".bss") == {}
    assert [m.name for m in table.members(4)] == ["slice_ns", "nr_queues"]
    assert btf.parse(_sections_and_enums()).enums == {"NEG": -3, "BIG": (1 << 32) | 5}


def test_bad_magic_and_unknown_kind_are_errors() -> None:
    with pytest.raises(ValueError, match="magic"):
        btf.parse(b"\0" * 32)
    bad = _blob(_type(0, 31, 0, 0), b"\0")
    with pytest.raises(ValueError, match="unknown BTF kind 31"):
        btf.parse(bad)


@pytest.mark.skipif(not btf.VMLINUX_BTF.exists(), reason="host kernel has no BTF")
def test_host_vmlinux_btf_parses() -> None:
    index = btf.parse(btf.VMLINUX_BTF.read_bytes())
    assert index.has_func("schedule") and len(index.funcs) > 1000


def test_index_is_cached_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDAGENT_CACHE_DIR", str(tmp_path))
    path = tmp_path / "vmlinux"
    path.write_bytes(_sample())
    btf.load.cache_clear()
    first = btf.load(path)
    assert list((tmp_path / "btf").glob("*.json"))
    btf.load.cache_clear()
    assert btf.load(path) == first
    btf.load.cache_clear()
