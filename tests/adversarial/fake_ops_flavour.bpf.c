/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a struct named sched_ext_ops___fake (libbpf strips ___ flavours when matching the kernel type) with its own layout */
// expect: 16 sched_ext_ops___fake
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

struct sched_ext_ops___fake {
	void (*enqueue)(struct task_struct *p, u64 f);
	char name[8];
};

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
}

SEC(".struct_ops.link")
struct sched_ext_ops___fake adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
/* struct sched_ext_ops x: what the text check looks for */
