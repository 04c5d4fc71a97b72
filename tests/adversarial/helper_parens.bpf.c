/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a forbidden helper behind parentheses, (bpf_probe_write_user)(...), which a per-line `name(` regex missed */
// expect: 11 bpf_probe_write_user
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	char buf[4] = {};

	(bpf_probe_write_user)((void *)0x1000, buf, sizeof(buf));
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
