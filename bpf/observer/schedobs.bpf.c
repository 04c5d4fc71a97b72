/* SPDX-License-Identifier: GPL-2.0 */
/*
 * schedobs: the always-on scheduling observer (read-only; CO-RE, loaded by libbpf).
 *
 * Attach points (BTF tracepoints, no kprobes):
 *   sched_wakeup, sched_wakeup_new  a task became runnable
 *   sched_switch                    a task left the CPU (still runnable if preempted)
 *                                   and another got it
 *   sched_migrate_task              a watched task moved to another CPU
 *   sched_process_fork              a watched process started a child: the child is watched
 *   sched_process_exit              a watched thread ended
 *   iter/task (obs_waiting)         user space asks which tasks wait right now
 *   iter/task (obs_sync)            user space starts counting newly watched threads
 *                                   that have had no event yet (one on a CPU since
 *                                   before the watch would otherwise go unseen)
 *
 * Maps:
 *   groups   tgid -> group (written by user space; children join their parent's group)
 *   threads  tid -> cumulative counters of a watched thread: the kernel's own (run
 *            time, runnable wait, timeslices: what schedstat shows; voluntary and
 *            involuntary switches: what status shows), copied at each switch away
 *            from the CPU, and this program's (wakeups, migrations). User space diffs
 *            two reads to get a window and deletes entries of threads long gone.
 *   hist     group -> log-linear histograms of runqueue wait: [0] wakeup to run,
 *            [1] preempted to run (8 slots per power of two of µs, the layout of
 *            schedlat.bcc.c's wake_fine; schedagent/models.py decodes it)
 *   worst    per CPU: the longest runnable wait that ended since user space last
 *            reset it, and whose it was (any task on the system)
 *   since    task storage: when each task became runnable (0 while it runs or sleeps)
 *
 * No vmlinux.h: the few kernel types read are declared here with
 * preserve_access_index, and libbpf relocates every field against the running
 * kernel's BTF. The cost of every event on the system is two task-storage lookups
 * and one hash lookup; watched tasks add one more and a few atomic adds.
 */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* uapi constants (stable ABI), spelled out as this file includes no kernel headers */
#define MAP_HASH 1
#define MAP_ARRAY 2
#define MAP_PERCPU_ARRAY 6
#define MAP_TASK_STORAGE 29
#define F_NO_PREALLOC 1
#define STORAGE_CREATE 1
#define NOEXIST 1

#define MAX_GROUPS 256
#define MAX_WATCHED_TGIDS 16384
#define MAX_THREADS 16384
#define FINE_SLOTS 256

struct sched_entity {
	__u64 sum_exec_runtime;
} __attribute__((preserve_access_index));

struct sched_info {
	unsigned long pcount;
	unsigned long long run_delay;
} __attribute__((preserve_access_index));

struct task_struct {
	int on_cpu;
	int pid;
	int tgid;
	struct sched_entity se;
	struct sched_info sched_info;
	unsigned long nvcsw;
	unsigned long nivcsw;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

/* the kernel's counters are absolute (since the thread's birth) */
struct tstat {
	__u32 tgid;
	__u32 group;
	__u64 run_ns;
	__u64 wait_ns;
	__u64 slices;
	__u64 voluntary;
	__u64 involuntary;
	__u64 wakeups;
	__u64 migrations;
	__u64 first_ns;		/* bpf_ktime (CLOCK_MONOTONIC) of its first event */
	__u64 exited_ns;	/* when it exited; 0 while it lives */
	__u64 on_cpu_ns;	/* got the CPU at; 0 off CPU (a reader adds the slice so far) */
	/* the kernel's counters when this entry was made: a thread that joined a watched
	 * process (or cgroup) mid-window counts from here, not from its birth */
	__u64 base_run_ns;
	__u64 base_wait_ns;
	__u64 base_slices;
	__u64 base_voluntary;
	__u64 base_involuntary;
};

struct ghist {
	__u64 c[2][FINE_SLOTS];
};

struct tstore {
	__u64 since;		/* runnable since (ns), 0 while running or sleeping */
	__u64 gen;		/* `generation` + 1 when group1 was looked up; 0: never */
	__u32 kind;		/* 0: woken, 1: preempted */
	__u32 group1;		/* its tgid's group + 1, 0 unwatched (as of gen) */
	__u32 running;		/* on a CPU (from its switch in to its switch out) */
	__u32 pad;
};

struct worst {
	__u64 wait_ns;
	__u32 tid;
	__u32 pad;
};

struct waiting {
	__u32 tid;
	__u32 tgid;
	__u64 wait_ns;
};

struct {
	__uint(type, MAP_HASH);
	__uint(max_entries, MAX_WATCHED_TGIDS);
	__type(key, __u32);
	__type(value, __u32);
} groups SEC(".maps");

struct {
	__uint(type, MAP_HASH);
	__uint(max_entries, MAX_THREADS);
	__type(key, __u32);
	__type(value, struct tstat);
} threads SEC(".maps");

struct {
	__uint(type, MAP_ARRAY);
	__uint(max_entries, MAX_GROUPS);
	__type(key, __u32);
	__type(value, struct ghist);
} hist SEC(".maps");

struct {
	__uint(type, MAP_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct worst);
} worst SEC(".maps");

/* 0: bumped by user space after every change to `groups`, so each task's cached
 * watched-or-not answer (in its task storage) is looked up again; the hot path of an
 * unwatched task then does no hash lookup at all */
struct {
	__uint(type, MAP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} generation SEC(".maps");

/* 0: thread entries that did not fit in `threads` */
struct {
	__uint(type, MAP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

struct {
	__uint(type, MAP_TASK_STORAGE);
	__uint(map_flags, F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tstore);
} since SEC(".maps");

/* iter/task reports tasks waiting at least this long (set by user space before load) */
const volatile __u64 report_wait_ns = 1000000;

char LICENSE[] SEC("license") = "GPL";

static __always_inline __u32 floor_log2(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

static __always_inline __u32 fine_slot(__u64 us)
{
	__u32 oct, slot;

	if (us < 8)
		return us;
	oct = floor_log2(us);
	slot = 8 + 8 * (oct - 3) + ((us >> (oct - 3)) & 7);
	return slot < FINE_SLOTS ? slot : FINE_SLOTS - 1;
}

/* copy the kernel's own counters: by sched_switch, prev's are up to date */
static __always_inline void snap(struct tstat *t, struct task_struct *p)
{
	t->run_ns = p->se.sum_exec_runtime;
	t->wait_ns = p->sched_info.run_delay;
	t->slices = p->sched_info.pcount;
	t->voluntary = p->nvcsw;
	t->involuntary = p->nivcsw;
}

static __always_inline void fresh_entry(struct tstat *t, struct task_struct *p, __u32 tgid,
					__u32 group, __u64 now)
{
	t->tgid = tgid;
	t->group = group;
	t->first_ns = now;
	snap(t, p);
	t->base_run_ns = t->run_ns;
	t->base_wait_ns = t->wait_ns;
	t->base_slices = t->slices;
	t->base_voluntary = t->voluntary;
	t->base_involuntary = t->involuntary;
}

/* the counters of a watched thread, created at its first event; NULL when unwatched.
 * Whether its tgid is watched is cached in its task storage `s` (when there is one)
 * until user space changes the groups. */
static __always_inline struct tstat *watched(struct task_struct *p, struct tstore *s, __u64 now)
{
	__u32 tgid = p->tgid, tid = p->pid, group, *found, zero = 0;
	__u64 *genp = bpf_map_lookup_elem(&generation, &zero), *lost, gen;
	struct tstat *t, fresh = {};

	/* read once: user space bumps it after changing `groups`, and a task that cached
	 * an answer looked up before the change must not keep it past the bump */
	gen = genp ? *genp + 1 : 0;
	if (s && gen && s->gen == gen) {
		if (!s->group1)
			return NULL;
		group = s->group1 - 1;
	} else {
		found = bpf_map_lookup_elem(&groups, &tgid);
		if (s && gen) {
			s->gen = gen;
			s->group1 = found ? *found + 1 : 0;
		}
		if (!found)
			return NULL;
		group = *found;
	}
	t = bpf_map_lookup_elem(&threads, &tid);
	if (t && t->tgid == tgid && t->group == group)
		return t;
	/* a new thread, a recycled tid, or a process moved to another group */
	fresh_entry(&fresh, p, tgid, group, now);
	if (bpf_map_update_elem(&threads, &tid, &fresh, 0)) {
		lost = bpf_map_lookup_elem(&dropped, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return NULL;
	}
	return bpf_map_lookup_elem(&threads, &tid);
}

static __always_inline int on_wakeup(struct task_struct *p)
{
	__u64 now = bpf_ktime_get_ns();
	struct tstore *s;
	struct tstat *t;

	if (!p->pid)
		return 0;
	s = bpf_task_storage_get(&since, p, 0, STORAGE_CREATE);
	/* a task woken while still on its CPU (woken before it got to schedule()), or
	 * already queued, is not starting a wait */
	if (s && !s->running && !s->since) {
		s->since = now;
		s->kind = 0;
	}
	t = watched(p, s, now);
	if (t)
		__sync_fetch_and_add(&t->wakeups, 1);
	return 0;
}

SEC("tp_btf/sched_wakeup")
int obs_wakeup(__u64 *ctx)
{
	return on_wakeup((struct task_struct *)ctx[0]);
}

SEC("tp_btf/sched_wakeup_new")
int obs_wakeup_new(__u64 *ctx)
{
	return on_wakeup((struct task_struct *)ctx[0]);
}

SEC("tp_btf/sched_switch")
int obs_switch(__u64 *ctx)
{
	struct task_struct *prev = (struct task_struct *)ctx[1];
	struct task_struct *next = (struct task_struct *)ctx[2];
	__u32 prev_state = (__u32)ctx[3], zero = 0, slot, kind;
	bool preempted = ctx[0] || prev_state == 0;
	__u64 now = bpf_ktime_get_ns(), wait;
	struct tstore *s;
	struct tstat *t;
	struct ghist *h;
	struct worst *w;

	if (prev->pid) {
		s = bpf_task_storage_get(&since, prev, 0, STORAGE_CREATE);
		t = watched(prev, s, now);
		if (t) {
			/* first: a reader that sees the new counters never adds the slice too */
			t->on_cpu_ns = 0;
			snap(t, prev);
		}
		if (s) {
			/* preempted (still queued): runnable from now; otherwise a stale
			 * wakeup stamp goes */
			s->since = preempted ? now : 0;
			s->kind = 1;
			s->running = 0;
		}
	}
	if (!next->pid)
		return 0;
	s = bpf_task_storage_get(&since, next, 0, STORAGE_CREATE);
	if (!s)
		return 0;
	t = watched(next, s, now);
	if (s->since && now > s->since) {
		wait = now - s->since;
		w = bpf_map_lookup_elem(&worst, &zero);
		if (w && wait > w->wait_ns) {
			w->wait_ns = wait;
			w->tid = next->pid;
		}
		if (t) {
			kind = s->kind & 1;
			h = bpf_map_lookup_elem(&hist, &t->group);
			slot = fine_slot(wait / 1000);
			if (h && slot < FINE_SLOTS)
				__sync_fetch_and_add(&h->c[kind][slot], 1);
		}
	}
	if (t)
		t->on_cpu_ns = now;	/* a reader adds the slice in progress */
	s->since = 0;
	s->running = 1;
	return 0;
}

SEC("tp_btf/sched_migrate_task")
int obs_migrate(__u64 *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	struct tstore *s = bpf_task_storage_get(&since, p, 0, 0);
	struct tstat *t = watched(p, s, bpf_ktime_get_ns());

	if (t)
		__sync_fetch_and_add(&t->migrations, 1);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int obs_fork(__u64 *ctx)
{
	struct task_struct *parent = (struct task_struct *)ctx[0];
	struct task_struct *child = (struct task_struct *)ctx[1];
	__u32 ptgid = parent->tgid, ctgid = child->tgid, *group;

	if (ptgid == ctgid)
		return 0;	/* a thread: its tgid is watched already */
	group = bpf_map_lookup_elem(&groups, &ptgid);
	if (group)
		bpf_map_update_elem(&groups, &ctgid, group, NOEXIST);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int obs_exit(__u64 *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	__u64 now = bpf_ktime_get_ns();
	__u32 tgid = p->tgid;
	struct tstat *t;

	t = watched(p, bpf_task_storage_get(&since, p, 0, 0), now);
	if (!t)
		return 0;
	t->on_cpu_ns = 0;
	snap(t, p);
	t->exited_ns = now;
	/* a child that joined at fork is not known to user space: its entry in `groups`
	 * goes with its leader (user space keeps and removes the tgids it wrote) */
	if (p->pid == p->tgid)
		bpf_map_delete_elem(&groups, &tgid);
	return 0;
}

SEC("iter/task")
int obs_waiting(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct waiting out = {};
	struct tstore *s;
	__u64 now;

	if (!task)
		return 0;
	s = bpf_task_storage_get(&since, task, 0, 0);
	if (!s || !s->since || s->running)
		return 0;
	now = bpf_ktime_get_ns();
	if (now <= s->since || now - s->since < report_wait_ns)
		return 0;
	out.tid = task->pid;
	out.tgid = task->tgid;
	out.wait_ns = now - s->since;
	bpf_seq_write(ctx->meta->seq, &out, sizeof(out));
	return 0;
}

SEC("iter/task")
int obs_sync(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct tstat fresh = {}, *t;
	__u32 tgid, tid, *group;
	__u64 now;

	if (!task)
		return 0;
	tgid = task->tgid;
	tid = task->pid;
	group = bpf_map_lookup_elem(&groups, &tgid);
	if (!group)
		return 0;
	t = bpf_map_lookup_elem(&threads, &tid);
	if (t && t->tgid == tgid && t->group == *group)
		return 0;
	now = bpf_ktime_get_ns();
	fresh_entry(&fresh, task, tgid, *group, now);
	/* on_cpu's type has changed across kernels (an int, lately narrower): read it by
	 * its relocated size rather than as the int declared here */
	fresh.on_cpu_ns = BPF_CORE_READ_BITFIELD_PROBED(task, on_cpu) ? now : 0;
	bpf_map_update_elem(&threads, &tid, &fresh, 0);
	return 0;
}
