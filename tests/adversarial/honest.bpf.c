/* SPDX-License-Identifier: GPL-2.0 */
/*
 * honest: a hand-written global FIFO that uses only the allowed headers.
 *
 * Policy:   waking tasks go to an idle CPU when there is one, else one shared FIFO.
 * Intent:   the scheduler every verification gate must accept (issue 12).
 * Tunables: slice_ns (time slice of every task).
 * Status:   experimental.
 */
// expect: 0 honest
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ns = 5000000;

#define HONEST_DSQ	0

s32 SA_OPS(honest_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = sa_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle)
		sa_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	return cpu;
}

void SA_OPS(honest_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_stat_add(0, 1);
	sa_dsq_insert(p, HONEST_DSQ, slice_ns, enq_flags);
}

void SA_OPS(honest_dispatch, s32 cpu, struct task_struct *prev)
{
	sa_dsq_move_to_local(HONEST_DSQ);
}

s32 SA_OPS_SLEEPABLE(honest_init)
{
	return scx_bpf_create_dsq(HONEST_DSQ, -1);
}

void SA_OPS(honest_exit, struct scx_exit_info *ei)
{
	sa_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops honest_ops = {
	.select_cpu	= (void *)honest_select_cpu,
	.enqueue	= (void *)honest_enqueue,
	.dispatch	= (void *)honest_dispatch,
	.init		= (void *)honest_init,
	.exit		= (void *)honest_exit,
	.name		= "honest",
};
