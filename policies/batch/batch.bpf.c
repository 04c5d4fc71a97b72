/* SPDX-License-Identifier: GPL-2.0 */
/*
 * batch: per-CPU queues, long slices and cache affinity for throughput.
 *
 * Policy:   each CPU has its own FIFO queue. A task stays on its previous CPU
 *           when that CPU is idle and otherwise queues there; an idle CPU
 *           steals only from a queue holding at least steal_min_queued tasks.
 *           Slices are long, so caches stay warm and migrations are rare.
 * Intent:   maximise completed work for CPU-bound parallel jobs.
 * Good fit: throughput and batch job sets.
 * Bad fit:  latency-critical work (long slices, no wakeup preemption).
 * Tunables: slice_ns, steal_min_queued.
 * Status:   experimental.
 */
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ns = 20000000;
const volatile u32 steal_min_queued = 1;

enum batch_stat { BATCH_STAT_ENQUEUED, BATCH_STAT_STAYED, BATCH_STAT_STOLEN };

/* DSQ ids 0 .. nr_cpu_ids-1 are the per-CPU queues */
#define BATCH_MAX_CPUS	512

s32 SA_OPS(batch_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	if (scx_bpf_test_and_clear_cpu_idle(prev_cpu)) {
		sa_stat_add(BATCH_STAT_STAYED, 1);
		sa_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return prev_cpu;
}

void SA_OPS(batch_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p);

	sa_stat_add(BATCH_STAT_ENQUEUED, 1);
	sa_dsq_insert(p, cpu, slice_ns, enq_flags);
	scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

void SA_OPS(batch_dispatch, s32 cpu, struct task_struct *prev)
{
	u32 nr = scx_bpf_nr_cpu_ids();
	s32 other;

	if (sa_dsq_move_to_local(cpu))
		return;
	bpf_for(other, 0, nr) {
		if (other == cpu || other >= BATCH_MAX_CPUS)
			continue;
		if (scx_bpf_dsq_nr_queued(other) >= steal_min_queued && sa_dsq_move_to_local(other)) {
			sa_stat_add(BATCH_STAT_STOLEN, 1);
			return;
		}
	}
}

s32 SA_OPS_SLEEPABLE(batch_init)
{
	u32 nr = scx_bpf_nr_cpu_ids();
	s32 cpu, ret;

	bpf_for(cpu, 0, nr) {
		if (cpu >= BATCH_MAX_CPUS)
			break;
		ret = scx_bpf_create_dsq(cpu, -1);
		if (ret)
			return ret;
	}
	return 0;
}

void SA_OPS(batch_exit, struct scx_exit_info *ei)
{
	sa_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops batch_ops = {
	.select_cpu	= (void *)batch_select_cpu,
	.enqueue	= (void *)batch_enqueue,
	.dispatch	= (void *)batch_dispatch,
	.init		= (void *)batch_init,
	.exit		= (void *)batch_exit,
	.name		= "batch",
};
