/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a uprobe program via a _Pragma operator spelled by token pasting */
// expect: 16 uprobe
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
#define CAT(a, b) a##b
#define P(x) CAT(_Pra, gma)(x)
P("clang attribute push (__attribute__((section(\"uprobe/bin/sh:main\"))), apply_to = function)")
int probe(void *ctx)
{
	return 0;
}
P("clang attribute pop")

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
