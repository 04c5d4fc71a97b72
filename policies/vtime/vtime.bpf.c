/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vtime: weighted virtual-time fair sharing on one queue.
 *
 * Policy:   tasks wait in one DSQ ordered by virtual time; a task's vtime grows
 *           by the time it ran, scaled by 100/weight, so nice levels get their
 *           share. The weight is the task's times its cgroup's cpu.weight / 100
 *           (ops.cgroup_init/cgroup_set_weight), so sibling cgroups with equal
 *           numbers of busy tasks share the CPUs by cpu.weight. A sleeper's vtime
 *           is clamped to lag_cap_ns behind the system's, so sleeping cannot bank
 *           unlimited credit.
 * Intent:   fair CPU shares by weight, with a tunable slice.
 * Good fit: CPU-bound parallel work on one LLC; mixed nice levels; cgroups with
 *           cpu.weight set.
 * Bad fit:  multi-socket NUMA (one shared queue, no locality); cgroups with
 *           cpu.max (no bandwidth limit is enforced); nested cpu.weight (only a
 *           task's own cgroup counts, its ancestors' weights are not compounded);
 *           sibling cgroups with very different numbers of busy tasks (the share
 *           is per task, not per cgroup).
 * Tunables: slice_ns (time slice), lag_cap_ns (how far behind a waking task may start).
 * Status:   stable.
 */
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ns = 5000000;
const volatile u64 lag_cap_ns = 20000000;

enum vtime_stat {
	VTIME_STAT_ENQUEUED,
	VTIME_STAT_DIRECT,
	VTIME_STAT_CAPPED,
	VTIME_STAT_CGROUP_WEIGHTED,
};

#define VTIME_DSQ	0

enum vtime_consts {
	/* cgroup v2's default cpu.weight (CGROUP_WEIGHT_DFL) and a nice-0 task's weight */
	VTIME_WEIGHT_DFL = 100,
	/* errno.h is not for BPF programs; the value is uapi */
	VTIME_ENOMEM = 12,
};

static u64 vtime_now;

#ifndef SA_NO_CGROUP_OPS
/* A cgroup's cpu.weight, kept with the cgroup itself (freed with it). */
struct vtime_cgrp {
	u32 weight;
};

struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct vtime_cgrp);
} vtime_cgrps SEC(".maps");

/*
 * The cpu.weight of p's cgroup (the one whose cpu controller governs p); a cgroup
 * not seen by ops.cgroup_init counts as the default.
 */
static u32 vtime_cgroup_weight(struct task_struct *p)
{
	struct cgroup *cgrp = scx_bpf_task_cgroup(p);
	struct vtime_cgrp *cg = bpf_cgrp_storage_get(&vtime_cgrps, cgrp, 0, 0);
	u32 weight = cg && cg->weight ? cg->weight : VTIME_WEIGHT_DFL;

	bpf_cgroup_release(cgrp);
	return weight;
}
#else
/* this kernel has no sched_ext cgroup ops (CONFIG_EXT_GROUP_SCHED=n): weights are not seen */
static u32 vtime_cgroup_weight(struct task_struct *p)
{
	return VTIME_WEIGHT_DFL;
}
#endif

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
	u64 weight = p->scx.weight ? p->scx.weight : VTIME_WEIGHT_DFL;
	u32 cgroup_weight = vtime_cgroup_weight(p);

	if (cgroup_weight != VTIME_WEIGHT_DFL)
		sa_stat_add(VTIME_STAT_CGROUP_WEIGHTED, 1);
	/*
	 * Charge used / (weight * cgroup_weight / 100), scaled by 100 like a nice-0 task:
	 * both weights are at most 10000, so the product and used * 10^4 fit in a u64.
	 */
	weight *= cgroup_weight;
	sa_set_vtime(p, p->scx.dsq_vtime +
			used * VTIME_WEIGHT_DFL * VTIME_WEIGHT_DFL / weight);
}

void SA_OPS(vtime_enable, struct task_struct *p)
{
	sa_set_vtime(p, vtime_now);
}

#ifndef SA_NO_CGROUP_OPS
s32 SA_OPS(vtime_cgroup_init, struct cgroup *cgrp, struct scx_cgroup_init_args *args)
{
	struct vtime_cgrp *cg = bpf_cgrp_storage_get(&vtime_cgrps, cgrp, 0,
						     BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!cg)
		return -VTIME_ENOMEM;
	cg->weight = args->weight;
	return 0;
}

void SA_OPS(vtime_cgroup_set_weight, struct cgroup *cgrp, u32 weight)
{
	struct vtime_cgrp *cg = bpf_cgrp_storage_get(&vtime_cgrps, cgrp, 0,
						     BPF_LOCAL_STORAGE_GET_F_CREATE);

	/* no memory for the record: the cgroup keeps the default weight until the next write */
	if (cg)
		cg->weight = weight;
}

void SA_OPS(vtime_cgroup_exit, struct cgroup *cgrp)
{
	bpf_cgrp_storage_delete(&vtime_cgrps, cgrp);
}
#endif

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
#ifndef SA_NO_CGROUP_OPS
	.cgroup_init	= (void *)vtime_cgroup_init,
	.cgroup_set_weight = (void *)vtime_cgroup_set_weight,
	.cgroup_exit	= (void *)vtime_cgroup_exit,
#endif
	.init		= (void *)vtime_init,
	.exit		= (void *)vtime_exit,
	.name		= "vtime",
};
