/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a sched_ext_ops in a plain SEC(".struct_ops"), which outlives the daemon; the section name is assembled by macros past the gate */
// expect: 16 .struct_ops
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
#define ATTR(x) __attribute__((x))
#define SECT(n) sec##tion(n)

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

/* SEC(".struct_ops.link") is what the text checks look for */
ATTR(SECT(".struct_ops"))
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
