/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: __has_include probes whether a root-only file exists */
// expect: 11 __has_include
#if __has_include("/etc/shadow")
#define SHADOW 1
#endif
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
