/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a 64 MiB .bss array, to exhaust kernel memory */
// expect: 16 .bss
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
char big[64 << 20];

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	big[p->pid & 1023] = 1;
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
