"""The static gate: checks a scheduler's source before anything compiles it.

It is the first and cheapest verification gate, and the one that keeps
generated code from reaching for capabilities a CPU scheduler never needs.
Every rejection names the offending line. A plain hand-written sched_ext
scheduler that includes only ``vmlinux.h``, libbpf's ``<bpf/...>`` headers and
the project's ``bpf/`` headers passes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schedagent.errors import GateRejection

MAX_SOURCE_BYTES = 64 * 1024
MAX_SOURCE_LINES = 1500

#: sched_ext kfuncs (old and new names) and the header macros over them.
ALLOWED_SCX = frozenset("""
scx_bpf_dsq_insert scx_bpf_dsq_insert_vtime scx_bpf_dispatch scx_bpf_dispatch_vtime
scx_bpf_dsq_move_to_local scx_bpf_consume scx_bpf_dsq_move scx_bpf_dsq_move_vtime
scx_bpf_dsq_move_set_slice scx_bpf_dsq_move_set_vtime scx_bpf_dispatch_from_dsq
scx_bpf_dispatch_vtime_from_dsq scx_bpf_dispatch_nr_slots scx_bpf_dispatch_cancel
scx_bpf_create_dsq scx_bpf_destroy_dsq scx_bpf_dsq_nr_queued scx_bpf_dsq_peek
scx_bpf_kick_cpu scx_bpf_reenqueue_local scx_bpf_select_cpu_dfl scx_bpf_select_cpu_and
scx_bpf_test_and_clear_cpu_idle scx_bpf_pick_idle_cpu scx_bpf_pick_any_cpu
scx_bpf_pick_idle_cpu_node scx_bpf_pick_any_cpu_node
scx_bpf_get_idle_cpumask scx_bpf_get_idle_smtmask scx_bpf_put_idle_cpumask
scx_bpf_get_idle_cpumask_node scx_bpf_get_idle_smtmask_node
scx_bpf_get_online_cpumask scx_bpf_get_possible_cpumask scx_bpf_put_cpumask
scx_bpf_nr_cpu_ids scx_bpf_nr_node_ids scx_bpf_cpu_node scx_bpf_task_running
scx_bpf_task_cpu scx_bpf_cpu_rq scx_bpf_task_cgroup scx_bpf_now scx_bpf_events
scx_bpf_cpuperf_cap scx_bpf_cpuperf_cur scx_bpf_cpuperf_set
scx_bpf_task_set_dsq_vtime scx_bpf_task_set_slice scx_bpf_dsq_reenq scx_bpf_cpu_curr
scx_bpf_error scx_bpf_error_bstr scx_bpf_exit scx_bpf_exit_bstr scx_bpf_dump scx_bpf_dump_bstr
""".split())

#: BPF helpers, generic kfuncs and libbpf header macros a scheduler may use.
ALLOWED_BPF = frozenset("""
bpf_ktime_get_ns bpf_ktime_get_boot_ns bpf_get_smp_processor_id bpf_get_prandom_u32
bpf_map_lookup_elem bpf_map_update_elem bpf_map_delete_elem bpf_map_lookup_percpu_elem
bpf_map_push_elem bpf_map_pop_elem bpf_map_peek_elem
bpf_task_storage_get bpf_task_storage_delete bpf_cgrp_storage_get bpf_cgrp_storage_delete
bpf_probe_read_kernel bpf_probe_read_kernel_str bpf_loop bpf_for bpf_for_each bpf_repeat
bpf_printk bpf_trace_printk bpf_get_current_pid_tgid bpf_get_current_task_btf
bpf_spin_lock bpf_spin_unlock bpf_kptr_xchg bpf_obj_new bpf_obj_drop
bpf_rcu_read_lock bpf_rcu_read_unlock bpf_task_from_pid bpf_task_acquire bpf_task_release
bpf_cgroup_from_id bpf_cgroup_acquire bpf_cgroup_release bpf_cgroup_ancestor
bpf_cpumask_create bpf_cpumask_release bpf_cpumask_acquire bpf_cpumask_set_cpu
bpf_cpumask_clear_cpu bpf_cpumask_test_cpu bpf_cpumask_first bpf_cpumask_first_zero
bpf_cpumask_and bpf_cpumask_or bpf_cpumask_copy bpf_cpumask_clear bpf_cpumask_setall
bpf_cpumask_empty bpf_cpumask_full bpf_cpumask_weight bpf_cpumask_any_distribute
bpf_cpumask_any_and_distribute bpf_cpumask_intersects bpf_cpumask_subset
bpf_cpumask_test_and_set_cpu bpf_cpumask_test_and_clear_cpu bpf_cpumask_equal
bpf_cpumask_first_and
bpf_core_read bpf_core_field_exists bpf_core_type_exists bpf_core_enum_value_exists
bpf_core_enum_value bpf_core_field_size bpf_core_type_size bpf_ksym_exists
bpf_iter_num_new bpf_iter_num_next bpf_iter_num_destroy
""".split())

#: Program sections a scheduler object may contain.
_ALLOWED_SECTIONS = re.compile(
    r'^(\.struct_ops(\.link)?|struct_ops(\.s)?/\w+|\.(data|bss|rodata)(\.\w+)?|license|\.maps)$'
)
_INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
_ALLOWED_INCLUDE = re.compile(r'^(vmlinux\.h|bpf/[\w.-]+\.h|schedagent/[\w.-]+\.h)$')
_CALL = re.compile(r'\b((?:scx_bpf|bpf)_\w+)\s*\(')
_ASM = re.compile(r'\b(asm|__asm__|__asm)\b')
_SECTION = re.compile(r'\bSEC\s*\(\s*"([^"]*)"\s*\)')
_OPS_DEF = re.compile(r'\b(?:SCX_OPS_DEFINE\s*\(\s*(\w+)|struct\s+sched_ext_ops\s+(\w+))')
_OPS_NAME = re.compile(r'\.name\s*=\s*"([^"]*)"')
_PREPROC_DEFINE = re.compile(r'^\s*#\s*define\s+(\w+)')
_FUNC_DEF = re.compile(r'\b(\w+)\s*\([^;{)]*\)\s*(?:\{|$)')


@dataclass(frozen=True, slots=True)
class GateReport:
    """What the gate learnt from a source it accepted."""

    ops_name: str
    calls: frozenset[str]
    lines: int
    size_bytes: int


def strip_comments_and_strings(text: str) -> str:
    """Blank out comments and string/char contents, keeping line numbers intact."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + " " * (min(j, n) - i - 1) + (c if j < n else ""))
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def check_source(text: str, source: str = "<source>") -> GateReport:
    """Run the static gate; return what it found or raise :class:`GateRejection`."""
    size = len(text.encode())
    if size > MAX_SOURCE_BYTES:
        raise GateRejection(source, 0, "size limit",
                            f"{size} bytes, the limit is {MAX_SOURCE_BYTES}; a scheduler this "
                            "large is probably two policies")
    raw_lines = text.splitlines()
    if len(raw_lines) > MAX_SOURCE_LINES:
        raise GateRejection(source, MAX_SOURCE_LINES + 1, "size limit",
                            f"{len(raw_lines)} lines, the limit is {MAX_SOURCE_LINES}")
    if "\0" in text:
        raise GateRejection(source, 0, "encoding", "the source contains NUL bytes")
    code = strip_comments_and_strings(text)
    code_lines = code.splitlines()
    _check_includes(raw_lines, code_lines, source)
    defined = _locally_defined(code)
    calls: set[str] = set()
    for lineno, line in enumerate(code_lines, 1):
        if _ASM.search(line):
            raise GateRejection(source, lineno, "inline assembly",
                                f"{raw_lines[lineno - 1].strip()!r}: inline asm is not allowed")
        for match in _CALL.finditer(line):
            # kfunc "flavours" (name___v2) resolve to the name before the ___
            name = match.group(1).split("___")[0]
            if name in defined:
                continue
            if name not in ALLOWED_SCX and name not in ALLOWED_BPF:
                raise GateRejection(
                    source, lineno, "kfunc/helper not allowed",
                    f"{name}() is not on the allow-list of sched_ext kfuncs and BPF helpers")
            calls.add(name)
        if "__ksym" in line:
            names = re.findall(r"\b((?:scx_bpf|bpf)_\w+)\s*\(", line)
            for name in names:
                if name not in ALLOWED_SCX and name not in ALLOWED_BPF:
                    raise GateRejection(source, lineno, "kfunc not allowed",
                                        f"extern {name} is not on the kfunc allow-list")
    for lineno, raw in enumerate(raw_lines, 1):
        for sec in _SECTION.findall(raw):
            if not _ALLOWED_SECTIONS.match(sec):
                raise GateRejection(source, lineno, "program type not allowed",
                                    f'SEC("{sec}"): a scheduler may only contain struct_ops '
                                    "programs and data sections")
    ops_name = _required_ops(text, code, source)
    return GateReport(ops_name, frozenset(calls), len(raw_lines), size)


def _check_includes(raw_lines: list[str], code_lines: list[str], source: str) -> None:
    for lineno, raw in enumerate(raw_lines, 1):
        match = _INCLUDE.match(raw)
        if not match or not code_lines[lineno - 1].lstrip().startswith("#"):
            continue
        header = match.group(2)
        if ".." in header or not _ALLOWED_INCLUDE.match(header):
            raise GateRejection(
                source, lineno, "include not allowed",
                f"#include {match.group(1)}{header}: only vmlinux.h, libbpf's <bpf/...> "
                "headers and the project's <schedagent/...> headers may be included")


def _locally_defined(code: str) -> set[str]:
    names = {m.group(1) for m in _PREPROC_DEFINE.finditer(code.replace("\\\n", " "))}
    for line in code.splitlines():
        if line.startswith((" ", "\t")):
            continue
        match = _FUNC_DEF.search(line)
        if match and "=" not in line.split("(")[0]:
            names.add(match.group(1))
    return names


def _required_ops(text: str, code: str, source: str) -> str:
    if not re.search(r'"\.struct_ops(\.link)?"', text) and "SCX_OPS_DEFINE" not in code:
        raise GateRejection(source, 0, "required ops missing",
                            'no struct sched_ext_ops in SEC(".struct_ops.link") (or '
                            "SCX_OPS_DEFINE); a scheduler must define one")
    defs = [m for m in _OPS_DEF.finditer(code)]
    if len(defs) > 1:
        line = code.count("\n", 0, defs[1].start()) + 1
        raise GateRejection(source, line, "one scheduler per file",
                            "a second struct sched_ext_ops is defined here")
    names = _OPS_NAME.findall(text)
    if not names:
        raise GateRejection(source, 0, "required ops missing",
                            'the sched_ext_ops has no .name = "..."; the kernel requires one')
    name = names[-1]
    if not re.fullmatch(r"[a-z0-9_]{1,63}", name):
        line = text.count("\n", 0, text.find(f'"{name}"')) + 1
        raise GateRejection(source, line, "ops name",
                            f'.name = "{name}": use 1-63 characters of a-z, 0-9 and _')
    if not re.search(r"\.enqueue\s*=", code):
        raise GateRejection(source, 0, "required ops missing",
                            "the sched_ext_ops has no .enqueue; schedagent requires every "
                            "scheduler to decide where woken tasks go")
    return name
