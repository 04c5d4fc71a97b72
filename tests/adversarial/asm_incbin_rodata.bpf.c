/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: file-scope asm spelled by token pasting, .incbin "/etc/shadow" into a .rodata.* section: every gate passed and the object held the file (a scheduler can hand it back in its exit message) */
// expect: 16 inline assembly
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define CAT(a, b) a##b
CAT(__as, m__)(".section .rodata.leak,\"a\"\n.globl leak\nleak:\n.incbin \"/etc/shadow\"\n"
	       ".byte 0\n.previous");

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
