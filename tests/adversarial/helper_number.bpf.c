/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a helper called by its number cast to a function pointer (109 is bpf_send_signal) */
// expect: 16 bpf_send_signal
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	((long (*)(u32))109)(9);
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
