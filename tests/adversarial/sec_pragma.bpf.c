/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a tracepoint program via _Pragma("clang attribute push ...") */
// expect: 11 _Pragma
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
_Pragma("clang attribute push (__attribute__((section(\"tracepoint/sched/sched_switch\"))), apply_to = function)")
int probe(void *ctx)
{
	return 0;
}
_Pragma("clang attribute pop")

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
