/* SPDX-License-Identifier: GPL-2.0 */
/*
 * schedlat: read-only bcc probe of a target's scheduling behaviour.
 *
 * Attach points (raw tracepoints, no kprobes):
 *   sched_wakeup, sched_wakeup_new  record when a target thread became runnable
 *   sched_switch                    wakeup-to-run latency, on-CPU burst length
 *   sched_migrate_task              migrations of target threads
 * Output: log2 histograms in µs (wake_lat, burst; bucket i >= 1 holds [2^(i-1), 2^i)),
 * a finer log-linear wakeup latency histogram (wake_fine: 8 slots per power of two,
 * for percentiles that can tell a 20% change apart) and counters (wakeups, migrations).
 * Overhead: one hash lookup per event on any CPU, plus two for target threads;
 * the loader reports the programs' measured run time (kernel.bpf_stats_enabled).
 */
#include <linux/sched.h>

BPF_HASH(targets, u32, u8, 4096);	/* tgid -> 1, written by user space */
BPF_HASH(woken_at, u32, u64, 65536);	/* tid -> ns it became runnable */
BPF_HASH(on_cpu_at, u32, u64, 65536);	/* tid -> ns it got the CPU */
BPF_HISTOGRAM(wake_lat, int, 64);
BPF_HISTOGRAM(burst, int, 64);
BPF_ARRAY(counts, u64, 2);		/* 0: wakeups, 1: migrations */

/*
 * wake_fine slots: values 0..7 µs get a slot each; above that, slot
 * 8 + 8 * (floor(log2 v) - 3) + (the three bits after the leading one).
 * schedagent/kernel/bccprobes.py decodes the same layout.
 */
#define FINE_SLOTS 256
BPF_ARRAY(wake_fine, u64, FINE_SLOTS);

static __always_inline u32 floor_log2(u64 v)
{
	u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

static __always_inline void fine_add(u64 us)
{
	u32 oct, slot;
	u64 *c;

	if (us < 8) {
		slot = us;
	} else {
		oct = floor_log2(us);
		slot = 8 + 8 * (oct - 3) + ((us >> (oct - 3)) & 7);
	}
	if (slot >= FINE_SLOTS)
		slot = FINE_SLOTS - 1;
	c = wake_fine.lookup(&slot);
	if (c)
		__sync_fetch_and_add(c, 1);
}

/* raw tracepoint arguments are plain scalars: read task fields explicitly */
static __always_inline u32 task_tgid(struct task_struct *p)
{
	u32 tgid = 0;

	bpf_probe_read_kernel(&tgid, sizeof(tgid), &p->tgid);
	return tgid;
}

static __always_inline u32 task_tid(struct task_struct *p)
{
	u32 tid = 0;

	bpf_probe_read_kernel(&tid, sizeof(tid), &p->pid);
	return tid;
}

static __always_inline bool is_target(struct task_struct *p)
{
	u32 tgid = task_tgid(p);

	return targets.lookup(&tgid) != NULL;
}

static __always_inline void count(int idx)
{
	u64 *c = counts.lookup(&idx);

	if (c)
		__sync_fetch_and_add(c, 1);
}

static __always_inline int on_wakeup(struct task_struct *p)
{
	u32 tid = task_tid(p);
	u64 now = bpf_ktime_get_ns();

	if (!is_target(p))
		return 0;
	woken_at.update(&tid, &now);
	count(0);
	return 0;
}

RAW_TRACEPOINT_PROBE(sched_wakeup)
{
	return on_wakeup((struct task_struct *)ctx->args[0]);
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new)
{
	return on_wakeup((struct task_struct *)ctx->args[0]);
}

RAW_TRACEPOINT_PROBE(sched_switch)
{
	struct task_struct *prev = (struct task_struct *)ctx->args[1];
	struct task_struct *next = (struct task_struct *)ctx->args[2];
	u64 now = bpf_ktime_get_ns(), *ts;
	u32 tid;

	if (is_target(prev)) {
		tid = task_tid(prev);
		ts = on_cpu_at.lookup(&tid);
		if (ts) {
			burst.increment(bpf_log2l((now - *ts) / 1000));
			on_cpu_at.delete(&tid);
		}
	}
	if (is_target(next)) {
		tid = task_tid(next);
		ts = woken_at.lookup(&tid);
		if (ts) {
			wake_lat.increment(bpf_log2l((now - *ts) / 1000));
			fine_add((now - *ts) / 1000);
			woken_at.delete(&tid);
		}
		on_cpu_at.update(&tid, &now);
	}
	return 0;
}

RAW_TRACEPOINT_PROBE(sched_migrate_task)
{
	if (is_target((struct task_struct *)ctx->args[0]))
		count(1);
	return 0;
}
