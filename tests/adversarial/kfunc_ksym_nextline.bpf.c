/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a kfunc that is not allowed, declared __ksym on the line after its prototype */
// expect: 11 bpf_send_signal_task
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
extern int bpf_send_signal_task(struct task_struct *task, int sig, int type, u64 value)
	__ksym;

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	bpf_send_signal_task(p, 9, 0, 0);
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
