/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a macro bomb: 8^16 tokens from nested function-like macros, to exhaust clang's memory (bounded by the compile limits) */
// expect: 17 exceeded the
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
#define B0(x) x x x x x x x x
#define B1(x) B0(B0(x))
#define B2(x) B1(B1(x))
#define B3(x) B2(B2(x))
#define B4(x) B3(B3(x))

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	volatile u64 x = B4(1 +) 0;
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
