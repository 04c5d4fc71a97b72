/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a struct_ops program that the ops map does not name */
// expect: 16 hidden_prog
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
void SA_OPS(hidden_prog, struct task_struct *p)
{
}

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
