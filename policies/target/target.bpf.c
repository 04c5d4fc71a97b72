/* SPDX-License-Identifier: GPL-2.0 */
/*
 * target: serve the SLO target first, and bound how long everyone else waits.
 *
 * Policy:   tasks whose tgid is in target_tgids (written by the engine) queue
 *           in a FIFO that is served before everything else. Other tasks share
 *           a weighted vtime queue. When the others have not been served for
 *           max_other_wait_ns, one of them runs next, whatever is queued: that
 *           is the bound on how long non-target work may starve.
 * Intent:   meet a latency SLO for one service on a busy host.
 * Good fit: latency-critical or mixed loads with one known target process.
 * Bad fit:  hosts with no single target; targets that are themselves CPU hogs.
 * Tunables: target_slice_ns, other_slice_ns, max_other_wait_ns.
 * Status:   experimental.
 */
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 target_slice_ns = 2000000;
const volatile u64 other_slice_ns = 5000000;
const volatile u64 max_other_wait_ns = 50000000;

enum target_stat { TGT_STAT_TARGET, TGT_STAT_OTHER, TGT_STAT_FORCED_OTHER };

#define TARGET_DSQ	0
#define OTHER_DSQ	1

/* tgid -> 1; filled by the engine before attach (map name is part of the contract) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);
	__type(value, u8);
} target_tgids SEC(".maps");

static u64 vtime_now;
static u64 other_served_ns;

static bool is_target(struct task_struct *p)
{
	u32 tgid = p->tgid;

	return bpf_map_lookup_elem(&target_tgids, &tgid) != NULL;
}

s32 SA_OPS(target_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = sa_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle)
		sa_dsq_insert(p, SCX_DSQ_LOCAL, is_target(p) ? target_slice_ns : other_slice_ns, 0);
	return cpu;
}

void SA_OPS(target_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 vtime = p->scx.dsq_vtime;

	if (is_target(p)) {
		sa_stat_add(TGT_STAT_TARGET, 1);
		sa_dsq_insert(p, TARGET_DSQ, target_slice_ns, enq_flags);
		/*
		 * A target waking behind a hog should not wait out the hog's slice.
		 * Only on wakeup: kicking on every re-enqueue at slice expiry would
		 * preempt the non-target task that max_other_wait_ns just let in,
		 * and starve it (the starvation test caught exactly that).
		 */
		if (enq_flags & SCX_ENQ_WAKEUP)
			scx_bpf_kick_cpu(scx_bpf_task_cpu(p), SCX_KICK_PREEMPT);
		return;
	}
	if (vtime_now > other_slice_ns && sa_before(vtime, vtime_now - other_slice_ns))
		vtime = vtime_now - other_slice_ns;
	sa_stat_add(TGT_STAT_OTHER, 1);
	sa_dsq_insert_vtime(p, OTHER_DSQ, other_slice_ns, vtime, enq_flags);
}

void SA_OPS(target_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 now = bpf_ktime_get_ns();

	if (now - other_served_ns > max_other_wait_ns && scx_bpf_dsq_nr_queued(OTHER_DSQ)) {
		sa_stat_add(TGT_STAT_FORCED_OTHER, 1);
		if (sa_dsq_move_to_local(OTHER_DSQ)) {
			other_served_ns = now;
			return;
		}
	}
	if (sa_dsq_move_to_local(TARGET_DSQ))
		return;
	if (sa_dsq_move_to_local(OTHER_DSQ))
		other_served_ns = now;
}

void SA_OPS(target_running, struct task_struct *p)
{
	if (!is_target(p) && sa_before(vtime_now, p->scx.dsq_vtime))
		vtime_now = p->scx.dsq_vtime;
}

void SA_OPS(target_stopping, struct task_struct *p, bool runnable)
{
	u64 used = p->scx.slice < other_slice_ns ? other_slice_ns - p->scx.slice : 0;
	u32 weight = p->scx.weight ? p->scx.weight : 100;
	u64 charge = used * 100 / weight;

	/*
	 * Others share what the target leaves, which can be very little. A nice-19
	 * task (weight 1) would be charged 100x its run time and then wait for the
	 * rest to catch up in that scarcity, long enough for the sched_ext watchdog
	 * to eject the scheduler (seen: khugepaged, 41 s). Capping the charge at four
	 * slices keeps weights meaningful and every waiter within a few rounds.
	 */
	if (charge > 4 * other_slice_ns)
		charge = 4 * other_slice_ns;
	if (!is_target(p))
		sa_set_vtime(p, p->scx.dsq_vtime + charge);
}

void SA_OPS(target_enable, struct task_struct *p)
{
	sa_set_vtime(p, vtime_now);
}

s32 SA_OPS_SLEEPABLE(target_init)
{
	s32 ret = scx_bpf_create_dsq(TARGET_DSQ, -1);

	if (ret)
		return ret;
	other_served_ns = bpf_ktime_get_ns();
	return scx_bpf_create_dsq(OTHER_DSQ, -1);
}

void SA_OPS(target_exit, struct scx_exit_info *ei)
{
	sa_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops target_ops = {
	.select_cpu	= (void *)target_select_cpu,
	.enqueue	= (void *)target_enqueue,
	.dispatch	= (void *)target_dispatch,
	.running	= (void *)target_running,
	.stopping	= (void *)target_stopping,
	.enable		= (void *)target_enable,
	.init		= (void *)target_init,
	.exit		= (void *)target_exit,
	.name		= "target",
};
