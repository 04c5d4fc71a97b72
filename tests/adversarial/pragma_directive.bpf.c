/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: #pragma, which can change sections, diagnostics and attributes */
// expect: 11 pragma
#pragma clang attribute push (__attribute__((section("kprobe/x"))), apply_to = function)
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
