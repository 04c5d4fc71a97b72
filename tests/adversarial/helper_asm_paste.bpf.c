/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: inline asm spelled by token pasting, CAT(as, m), calling helper 109 */
// expect: 16 bpf_send_signal
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
#define CAT(a, b) a##b

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	CAT(as, m) volatile("call 109" ::: "r0", "r1", "r2", "r3", "r4", "r5");
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
