/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vtime: weighted virtual-time fair sharing on one queue.
 *
 * Policy:   tasks wait in one DSQ ordered by virtual time; a task's vtime grows
 *           by the time it ran, scaled by 100/weight, so nice levels get their
 *           share. A sleeper's vtime is clamped to lag_cap_ns behind the
 *           system's, so sleeping cannot bank unlimited credit.
 * Intent:   fair CPU shares by weight, with a tunable slice.
 * Good fit: CPU-bound parallel work on one LLC; mixed nice levels.
 * Bad fit:  multi-socket NUMA (one shared queue, no locality).
 * Tunables: slice_ns (time slice), lag_cap_ns (how far behind a waking task may start).
 * Status:   stable.
 */
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ns = 5000000;
const volatile u64 lag_cap_ns = 20000000;

enum vtime_stat { VTIME_STAT_ENQUEUED, VTIME_STAT_DIRECT, VTIME_STAT_CAPPED };

#define VTIME_DSQ	0

static u64 vtime_now;

s32 SA_OPS(vtime_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = sa_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle) {
		sa_stat_add(VTIME_STAT_DIRECT, 1);
		sa_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

void SA_OPS(vtime_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 vtime = p->scx.dsq_vtime;
	u64 floor = vtime_now - lag_cap_ns;

	if (vtime_now > lag_cap_ns && sa_before(vtime, floor)) {
		vtime = floor;
		sa_stat_add(VTIME_STAT_CAPPED, 1);
	}
	sa_stat_add(VTIME_STAT_ENQUEUED, 1);
	sa_dsq_insert_vtime(p, VTIME_DSQ, slice_ns, vtime, enq_flags);
}

void SA_OPS(vtime_dispatch, s32 cpu, struct task_struct *prev)
{
	sa_dsq_move_to_local(VTIME_DSQ);
}

void SA_OPS(vtime_running, struct task_struct *p)
{
	if (sa_before(vtime_now, p->scx.dsq_vtime))
		vtime_now = p->scx.dsq_vtime;
}

void SA_OPS(vtime_stopping, struct task_struct *p, bool runnable)
{
	u64 used = p->scx.slice < slice_ns ? slice_ns - p->scx.slice : 0;
	u32 weight = p->scx.weight ? p->scx.weight : 100;

	sa_set_vtime(p, p->scx.dsq_vtime + used * 100 / weight);
}

void SA_OPS(vtime_enable, struct task_struct *p)
{
	sa_set_vtime(p, vtime_now);
}

s32 SA_OPS_SLEEPABLE(vtime_init)
{
	return scx_bpf_create_dsq(VTIME_DSQ, -1);
}

void SA_OPS(vtime_exit, struct scx_exit_info *ei)
{
	sa_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops vtime_ops = {
	.select_cpu	= (void *)vtime_select_cpu,
	.enqueue	= (void *)vtime_enqueue,
	.dispatch	= (void *)vtime_dispatch,
	.running	= (void *)vtime_running,
	.stopping	= (void *)vtime_stopping,
	.enable		= (void *)vtime_enable,
	.init		= (void *)vtime_init,
	.exit		= (void *)vtime_exit,
	.name		= "vtime",
};
