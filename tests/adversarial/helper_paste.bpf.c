/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a forbidden helper built by token pasting, CAT(bpf, _send_signal); no token of the text spells it, so the object check must find helper 109 */
// expect: 16 bpf_send_signal
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
#define CAT(a, b) a##b

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	CAT(bpf, _send_signal)(9);
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
