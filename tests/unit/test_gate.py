"""The static gate accepts plain schedulers and names the line of every rejection."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedagent.errors import GateRejection
from schedagent.policy.gate import MAX_SOURCE_BYTES, check_source

FIXTURES = Path(__file__).resolve().parents[1] / "vm" / "fixtures"

PLAIN = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
/* an admin's own scheduler: asm is only mentioned in this comment */
char _license[] SEC("license") = "GPL";
SEC("struct_ops/plain_enqueue")
void BPF_PROG(plain_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}
SEC(".struct_ops.link")
struct sched_ext_ops plain_ops = {
	.enqueue = (void *)plain_enqueue,
	.name = "plain",
};
"""


def _reject(text: str) -> GateRejection:
    with pytest.raises(GateRejection) as caught:
        check_source(text, "t.bpf.c")
    return caught.value


def test_plain_hand_written_scheduler_passes() -> None:
    report = check_source(PLAIN)
    assert report.ops_name == "plain"
    assert "scx_bpf_dsq_insert" in report.calls


def test_project_fixtures_pass() -> None:
    names = {
        check_source(p.read_text()).ops_name
        for p in FIXTURES.glob("*.bpf.c")
        if p.name != "gate_reject.bpf.c"
    }
    assert names == {"minimal", "stall", "error", "verifier_reject", "lastserve"}


def test_disallowed_helper_is_named_with_its_line() -> None:
    err = _reject((FIXTURES / "gate_reject.bpf.c").read_text())
    assert err.rule == "kfunc/helper not allowed"
    assert "bpf_probe_write_user" in err.detail
    lines = (FIXTURES / "gate_reject.bpf.c").read_text().splitlines()
    assert "bpf_probe_write_user((void *)" in lines[err.line - 1]


def test_foreign_include_is_rejected_at_its_line() -> None:
    err = _reject(PLAIN.replace("#include <bpf/bpf_tracing.h>", "#include <linux/sched.h>"))
    assert (err.rule, err.line) == ("include not allowed", 3)


def test_path_traversal_include_is_rejected() -> None:
    err = _reject(PLAIN.replace("<bpf/bpf_tracing.h>", '"schedagent/../../etc/passwd"'))
    assert err.rule == "include not allowed"


def test_inline_asm_is_rejected_but_not_in_comments() -> None:
    text = PLAIN.replace("{\n\tscx_bpf", '{\n\tasm volatile("r0 = 0");\n\tscx_bpf')
    err = _reject(text)
    assert (err.rule, err.line) == ("inline assembly", 9)


def test_tracing_program_section_is_rejected() -> None:
    err = _reject(PLAIN + 'SEC("kprobe/do_exit")\nint probe(void *ctx) { return 0; }\n')
    assert err.rule == "program type not allowed" and err.line == 16


def test_missing_enqueue_and_missing_ops_are_rejected() -> None:
    assert (
        _reject(PLAIN.replace("\t.enqueue = (void *)plain_enqueue,\n", "")).rule
        == "required ops missing"
    )
    no_ops = PLAIN.split('SEC(".struct_ops.link")')[0]
    assert _reject(no_ops).rule == "required ops missing"


def test_oversized_source_is_rejected() -> None:
    err = _reject(PLAIN + "// pad\n" * (MAX_SOURCE_BYTES // 7 + 1))
    assert err.rule == "size limit"


def test_bad_ops_name_is_rejected() -> None:
    err = _reject(PLAIN.replace('"plain"', '"Plain-Sched!"'))
    assert err.rule == "ops name" and err.line == 14


def test_kfunc_allow_list_strips_flavour_suffix() -> None:
    text = PLAIN.replace("scx_bpf_dsq_insert(", "scx_bpf_dsq_insert___v2(")
    assert "scx_bpf_dsq_insert" in check_source(text).calls
