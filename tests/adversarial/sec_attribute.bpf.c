/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a kprobe program via __attribute__((section(...))) */
// expect: 11 section
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
__attribute__((section("kprobe/do_exit")))
int probe(void *ctx)
{
	return 0;
}

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
