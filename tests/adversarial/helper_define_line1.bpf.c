#define bpf_send_signal(sig) ((long (*)(u32))109)(sig)
/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: `#define bpf_send_signal ...` on line 1 (the old regex lacked re.M and took it for a local name) */
// expect: 11 bpf_send_signal
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	bpf_send_signal(9);
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
