/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a kfunc that is not allowed (vmlinux.h declares every kfunc), called by a name built by token pasting so no token spells it; the object holds the extern */
// expect: 16 bpf_send_signal_task
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
#define CAT(a, b) a##b

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	CAT(bp, f_send_signal_task)(p, 9, PIDTYPE_PID, 0);
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
