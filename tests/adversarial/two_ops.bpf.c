/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: two sched_ext_ops maps in one object, the second declared with __typeof__ so no text names its type */
// expect: 16 exactly one struct_ops map
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

SEC(".struct_ops.link")
__typeof__(adv_ops) adv2_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv2",
};
