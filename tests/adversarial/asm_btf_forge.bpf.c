/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: pasted file-scope asm writes its own .BTF ahead of clang's, with /etc/shadow as the string table: the object check then named a type after the file's first line */
// expect: 16 inline assembly
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

#define CAT(a, b) a##b
CAT(__as, m__)(".section .BTF,\"\",@progbits\n"
	       ".short 0xeb9f\n.byte 1,0\n.long 24\n.long 0,52,52,200\n"
	       ".long 19, 0x04000000, 8\n"
	       ".long 19, 0x0e000000, 1, 1\n"
	       ".long 1, 0x0f000001, 8, 2, 0, 8\n"
	       ".byte 0\n.asciz \".struct_ops.link\"\n.incbin \"/etc/shadow\"\n.byte 0\n"
	       ".previous");

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
