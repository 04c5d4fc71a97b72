/* SPDX-License-Identifier: GPL-2.0 */
/*
 * latency: earliest-deadline-first for tasks that run in short bursts.
 *
 * Policy:   every task keeps a fair vtime (runtime scaled by 100/weight) and an
 *           average burst length (EWMA of each stint on the CPU). Its deadline
 *           is vtime + avg_burst * burst_weight_pct / 100, so a task that runs
 *           briefly and sleeps often is picked before a CPU hog with the same
 *           vtime. A waking task starts at most wake_credit_ns behind the
 *           system's vtime: that lag cap is the starvation bound, since no
 *           newcomer can jump ahead of a queued task by more than
 *           wake_credit_ns plus its own average burst.
 * Intent:   cut wakeup latency of interactive and request-serving threads under CPU load.
 * Good fit: latency-critical and interactive tasks beside batch work on one LLC.
 * Bad fit:  pure throughput farms (short slices cost cache warmth).
 * Tunables: slice_ns, wake_credit_ns, burst_weight_pct.
 * Status:   experimental.
 */
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ns = 3000000;
const volatile u64 wake_credit_ns = 6000000;
const volatile u32 burst_weight_pct = 100;

enum latency_stat { LAT_STAT_ENQUEUED, LAT_STAT_DIRECT, LAT_STAT_WAKEUPS, LAT_STAT_CAPPED };

#define LATENCY_DSQ	0

struct latency_task {
	u64 vtime;		/* fair share clock, ns scaled by weight */
	u64 avg_burst_ns;	/* EWMA of time on CPU per stint */
	u64 started_ns;		/* when the current stint began */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct latency_task);
} latency_tasks SEC(".maps");

static u64 vtime_now;

static struct latency_task *lookup(struct task_struct *p)
{
	return bpf_task_storage_get(&latency_tasks, p, 0, 0);
}

s32 SA_OPS(latency_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = sa_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle) {
		sa_stat_add(LAT_STAT_DIRECT, 1);
		sa_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

void SA_OPS(latency_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct latency_task *t = lookup(p);
	u64 floor, deadline;

	if (!t) {
		sa_dsq_insert(p, SCX_DSQ_GLOBAL, slice_ns, enq_flags);
		return;
	}
	if (enq_flags & SCX_ENQ_WAKEUP)
		sa_stat_add(LAT_STAT_WAKEUPS, 1);
	floor = vtime_now - wake_credit_ns;
	if (vtime_now > wake_credit_ns && sa_before(t->vtime, floor)) {
		t->vtime = floor;
		sa_stat_add(LAT_STAT_CAPPED, 1);
	}
	deadline = t->vtime + t->avg_burst_ns * burst_weight_pct / 100;
	sa_stat_add(LAT_STAT_ENQUEUED, 1);
	sa_dsq_insert_vtime(p, LATENCY_DSQ, slice_ns, deadline, enq_flags);
}

void SA_OPS(latency_dispatch, s32 cpu, struct task_struct *prev)
{
	sa_dsq_move_to_local(LATENCY_DSQ);
}

void SA_OPS(latency_running, struct task_struct *p)
{
	struct latency_task *t = lookup(p);

	if (!t)
		return;
	t->started_ns = bpf_ktime_get_ns();
	if (sa_before(vtime_now, t->vtime))
		vtime_now = t->vtime;
}

void SA_OPS(latency_stopping, struct task_struct *p, bool runnable)
{
	struct latency_task *t = lookup(p);
	u32 weight = p->scx.weight ? p->scx.weight : 100;
	u64 ran;

	if (!t || !t->started_ns)
		return;
	ran = bpf_ktime_get_ns() - t->started_ns;
	t->vtime += ran * 100 / weight;
	/* EWMA with weight 1/4: reacts within a few bursts, ignores one-offs */
	t->avg_burst_ns = (t->avg_burst_ns * 3 + ran) / 4;
}

s32 SA_OPS(latency_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct latency_task *t;

	t = bpf_task_storage_get(&latency_tasks, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!t)
		return -12;	/* -ENOMEM: the kernel refuses the task, not the scheduler */
	t->vtime = vtime_now;
	return 0;
}

s32 SA_OPS_SLEEPABLE(latency_init)
{
	return scx_bpf_create_dsq(LATENCY_DSQ, -1);
}

void SA_OPS(latency_exit, struct scx_exit_info *ei)
{
	sa_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops latency_ops = {
	.select_cpu	= (void *)latency_select_cpu,
	.enqueue	= (void *)latency_enqueue,
	.dispatch	= (void *)latency_dispatch,
	.running	= (void *)latency_running,
	.stopping	= (void *)latency_stopping,
	.init_task	= (void *)latency_init_task,
	.init		= (void *)latency_init,
	.exit		= (void *)latency_exit,
	.name		= "latency",
};
