/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fifo: one global first-in first-out queue.
 *
 * Policy:   a waking task goes straight to an idle CPU when there is one; every
 *           other task joins one shared FIFO queue with a fixed slice.
 * Intent:   a baseline and sanity check for every other policy.
 * Good fit: short-lived messaging bursts on few CPUs, where queueing order matters little.
 * Bad fit:  mixed latency/batch loads (no priority, no fairness by weight).
 * Tunables: slice_ns (time slice of every task).
 * Status:   stable.
 */
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ns = 5000000;

enum fifo_stat { FIFO_STAT_ENQUEUED, FIFO_STAT_DIRECT, FIFO_STAT_DISPATCHED };

#define FIFO_DSQ	0

s32 SA_OPS(fifo_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = sa_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle) {
		sa_stat_add(FIFO_STAT_DIRECT, 1);
		sa_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

void SA_OPS(fifo_enqueue, struct task_struct *p, u64 enq_flags)
{
	sa_stat_add(FIFO_STAT_ENQUEUED, 1);
	sa_dsq_insert(p, FIFO_DSQ, slice_ns, enq_flags);
}

void SA_OPS(fifo_dispatch, s32 cpu, struct task_struct *prev)
{
	if (sa_dsq_move_to_local(FIFO_DSQ))
		sa_stat_add(FIFO_STAT_DISPATCHED, 1);
}

s32 SA_OPS_SLEEPABLE(fifo_init)
{
	return scx_bpf_create_dsq(FIFO_DSQ, -1);
}

void SA_OPS(fifo_exit, struct scx_exit_info *ei)
{
	sa_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops fifo_ops = {
	.select_cpu	= (void *)fifo_select_cpu,
	.enqueue	= (void *)fifo_enqueue,
	.dispatch	= (void *)fifo_dispatch,
	.init		= (void *)fifo_init,
	.exit		= (void *)fifo_exit,
	.name		= "fifo",
};
