/* SPDX-License-Identifier: GPL-2.0 */
/*
 * locality: wake tasks on an idle CPU that shares a cache with their last CPU.
 *
 * Policy:   on wakeup, keep the previous CPU if it is idle; otherwise take an
 *           idle CPU in the same last-level cache domain (from cpu_llc, filled
 *           by the engine from sysfs); only then any idle CPU. Tasks that find
 *           no idle CPU queue on their previous CPU's own DSQ, and a CPU with
 *           nothing local takes work from its own LLC before crossing caches.
 * Intent:   keep caches warm and avoid cross-LLC migrations for wakeup-heavy work.
 * Good fit: messaging and producer/consumer pipelines on multi-LLC machines.
 * Bad fit:  single-LLC machines (no gain over fifo), strict fairness needs.
 * Tunables: slice_ns.
 * Status:   experimental.
 */
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ns = 5000000;

enum locality_stat { LOC_STAT_PREV, LOC_STAT_SAME_LLC, LOC_STAT_ANY_IDLE, LOC_STAT_QUEUED,
		     LOC_STAT_PULL_LLC, LOC_STAT_PULL_FAR };

#define LOC_MAX_CPUS	512

/* cpu -> LLC id; the engine writes it from /sys/devices/system/cpu/cpuN/cache */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LOC_MAX_CPUS);
	__type(key, u32);
	__type(value, u32);
} cpu_llc SEC(".maps");

static u32 llc_of(s32 cpu)
{
	u32 key = cpu;
	u32 *llc = bpf_map_lookup_elem(&cpu_llc, &key);

	return llc ? *llc : 0;
}

s32 SA_OPS(locality_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	u32 nr = scx_bpf_nr_cpu_ids(), llc = llc_of(prev_cpu);
	bool is_idle = false;
	s32 cpu;

	if (scx_bpf_test_and_clear_cpu_idle(prev_cpu)) {
		sa_stat_add(LOC_STAT_PREV, 1);
		sa_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		return prev_cpu;
	}
	bpf_for(cpu, 0, nr) {
		if (cpu >= LOC_MAX_CPUS)
			break;
		if (cpu == prev_cpu || llc_of(cpu) != llc)
			continue;
		if (bpf_cpumask_test_cpu(cpu, p->cpus_ptr) && scx_bpf_test_and_clear_cpu_idle(cpu)) {
			sa_stat_add(LOC_STAT_SAME_LLC, 1);
			sa_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
			return cpu;
		}
	}
	cpu = sa_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle) {
		sa_stat_add(LOC_STAT_ANY_IDLE, 1);
		sa_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
	}
	return cpu;
}

void SA_OPS(locality_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p);

	sa_stat_add(LOC_STAT_QUEUED, 1);
	sa_dsq_insert(p, cpu, slice_ns, enq_flags);
	scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

void SA_OPS(locality_dispatch, s32 cpu, struct task_struct *prev)
{
	u32 nr = scx_bpf_nr_cpu_ids(), llc = llc_of(cpu);
	s32 other;

	if (sa_dsq_move_to_local(cpu))
		return;
	bpf_for(other, 0, nr) {
		if (other >= LOC_MAX_CPUS)
			break;
		if (other != cpu && llc_of(other) == llc && sa_dsq_move_to_local(other)) {
			sa_stat_add(LOC_STAT_PULL_LLC, 1);
			return;
		}
	}
	bpf_for(other, 0, nr) {
		if (other >= LOC_MAX_CPUS)
			break;
		if (other != cpu && sa_dsq_move_to_local(other)) {
			sa_stat_add(LOC_STAT_PULL_FAR, 1);
			return;
		}
	}
}

s32 SA_OPS_SLEEPABLE(locality_init)
{
	u32 nr = scx_bpf_nr_cpu_ids();
	s32 cpu, ret;

	bpf_for(cpu, 0, nr) {
		if (cpu >= LOC_MAX_CPUS)
			break;
		ret = scx_bpf_create_dsq(cpu, -1);
		if (ret)
			return ret;
	}
	return 0;
}

void SA_OPS(locality_exit, struct scx_exit_info *ei)
{
	sa_record_exit(ei);
}

SEC(".struct_ops.link")
struct sched_ext_ops locality_ops = {
	.select_cpu	= (void *)locality_select_cpu,
	.enqueue	= (void *)locality_enqueue,
	.dispatch	= (void *)locality_dispatch,
	.init		= (void *)locality_init,
	.exit		= (void *)locality_exit,
	.name		= "locality",
};
