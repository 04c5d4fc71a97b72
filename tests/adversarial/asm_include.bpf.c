/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: pasted file-scope asm with the assembler's own .include "/etc/shadow", which no preprocessor directive check sees */
// expect: 16 inline assembly
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define CAT(a, b) a##b
CAT(__as, m__)(".include \"/etc/shadow\"");

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
