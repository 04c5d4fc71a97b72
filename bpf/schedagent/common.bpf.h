/* SPDX-License-Identifier: GPL-2.0 */
/*
 * common.bpf.h: what every schedagent scheduler includes.
 *
 * It pulls in vmlinux.h and libbpf's headers, wraps the sched_ext kfuncs whose
 * names or signatures changed between kernels (the toolchain passes
 * -DSA_HAVE_<kfunc> for each one found in the running kernel's BTF), and
 * defines the exit-info record and the stats counters that the loader reads.
 */
#ifndef __SCHEDAGENT_COMMON_BPF_H
#define __SCHEDAGENT_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define SA_OPS(name, args...)	SEC("struct_ops/" #name) BPF_PROG(name, ##args)
#define SA_OPS_SLEEPABLE(name, args...)	SEC("struct_ops.s/" #name) BPF_PROG(name, ##args)

#define SA_NSEC_PER_USEC	1000ULL
#define SA_NSEC_PER_MSEC	1000000ULL

#ifndef likely
#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)
#endif

/*
 * scx_bpf_error() and scx_bpf_exit() are not kfuncs: they pack their
 * arguments into a u64 array and call the *_bstr kfuncs.
 */
#define sa_bstr_pack(fmt, args...)					\
	static char ___fmt[] = fmt;					\
	unsigned long long ___param[___bpf_narg(args)];			\
	_Pragma("GCC diagnostic push")					\
	_Pragma("GCC diagnostic ignored \"-Wint-conversion\"")		\
	___bpf_fill(___param, args);					\
	_Pragma("GCC diagnostic pop")

#ifndef scx_bpf_error
#define scx_bpf_error(fmt, args...)					\
({									\
	sa_bstr_pack(fmt, ##args)					\
	scx_bpf_error_bstr(___fmt, ___param, sizeof(___param));		\
})
#endif

#ifndef scx_bpf_exit
#define scx_bpf_exit(code, fmt, args...)				\
({									\
	sa_bstr_pack(fmt, ##args)					\
	scx_bpf_exit_bstr(code, ___fmt, ___param, sizeof(___param));	\
})
#endif

/* ---- kfunc compatibility, chosen from the running kernel's BTF ---- */

/*
 * Insert into a DSQ. 6.13 renamed scx_bpf_dispatch() to scx_bpf_dsq_insert().
 * 6.19 added a bool-returning scx_bpf_dsq_insert___v2; libbpf resolves a kfunc
 * by its name without the ___suffix and then rejects the prototype mismatch, so
 * the plain name is used whenever the kernel still has it.
 */
static __always_inline void sa_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice,
					  u64 enq_flags)
{
#if defined(SA_HAVE_scx_bpf_dsq_insert)
	scx_bpf_dsq_insert(p, dsq_id, slice, enq_flags);
#else
	scx_bpf_dispatch(p, dsq_id, slice, enq_flags);
#endif
}

/* Insert into a DSQ ordered by vtime. 6.19+ passes the args in a struct. */
static __always_inline void sa_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice,
						u64 vtime, u64 enq_flags)
{
#if defined(SA_HAVE_scx_bpf_dsq_insert_vtime)
	scx_bpf_dsq_insert_vtime(p, dsq_id, slice, vtime, enq_flags);
#else
	scx_bpf_dispatch_vtime(p, dsq_id, slice, vtime, enq_flags);
#endif
}

/* Move the first task of a DSQ to the local DSQ; true if one moved. */
static __always_inline bool sa_dsq_move_to_local(u64 dsq_id)
{
#if defined(SA_MOVE_TO_LOCAL_NARGS) && SA_MOVE_TO_LOCAL_NARGS == 2
	return scx_bpf_dsq_move_to_local(dsq_id, 0);
#elif defined(SA_HAVE_scx_bpf_dsq_move_to_local)
	return scx_bpf_dsq_move_to_local(dsq_id);
#else
	return scx_bpf_consume(dsq_id);
#endif
}

static __always_inline u64 sa_now(void)
{
#if defined(SA_HAVE_scx_bpf_now)
	return scx_bpf_now();
#else
	return bpf_ktime_get_ns();
#endif
}

/*
 * Set a task's vtime. 6.19 added a setter kfunc; before it, struct_ops
 * programs wrote p->scx.dsq_vtime directly.
 */
static __always_inline void sa_set_vtime(struct task_struct *p, u64 vtime)
{
#if defined(SA_HAVE_scx_bpf_task_set_dsq_vtime)
	scx_bpf_task_set_dsq_vtime(p, vtime);
#else
	p->scx.dsq_vtime = vtime;
#endif
}

/* True if a comes before b, robust to u64 wrap-around. */
static __always_inline bool sa_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

/*
 * Pick a CPU the default way (prev_cpu if idle, else an idle CPU nearby);
 * *is_idle says whether the CPU returned was idle and is now claimed.
 */
static __always_inline s32 sa_select_cpu_dfl(struct task_struct *p, s32 prev_cpu, u64 wake_flags,
					     bool *is_idle)
{
	return scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, is_idle);
}

/* ---- exit info: the loader reads this after ops.exit has run ---- */

#define SA_EXIT_REASON_LEN	128
#define SA_EXIT_MSG_LEN		1024

/* Same layout as scx's user_exit_info, so the loader reads both. */
struct sa_exit_info {
	int kind;
	s64 exit_code;
	char reason[SA_EXIT_REASON_LEN];
	char msg[SA_EXIT_MSG_LEN];
};

struct sa_exit_info sa_exit;

static __always_inline void sa_record_exit(struct scx_exit_info *ei)
{
	bpf_probe_read_kernel_str(sa_exit.reason, sizeof(sa_exit.reason), ei->reason);
	bpf_probe_read_kernel_str(sa_exit.msg, sizeof(sa_exit.msg), ei->msg);
	sa_exit.exit_code = ei->exit_code;
	/* kind last: user space treats a non-zero kind as "record complete" */
	sa_exit.kind = ei->kind;
}

/* ---- stats: a per-CPU array of SA_MAX_STATS u64 counters, summed in user space ---- */

#define SA_MAX_STATS	16

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64[SA_MAX_STATS]);
} sa_stats SEC(".maps");

/* Add n to counter idx (an enum value of the policy, below SA_MAX_STATS). */
static __always_inline void sa_stat_add(u32 idx, u64 n)
{
	u32 key = 0;
	u64 *cnt = bpf_map_lookup_elem(&sa_stats, &key);

	if (cnt && idx < SA_MAX_STATS)
		cnt[idx] += n;
}

#endif /* __SCHEDAGENT_COMMON_BPF_H */
