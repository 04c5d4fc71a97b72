/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: its own struct sched_ext_ops with fake offsets (name and flags far past the real struct), so a loader trusting the object's BTF reads and writes out of bounds */
// expect: 16 ops layout
typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;
typedef unsigned short __u16;
typedef unsigned char __u8;
typedef unsigned short __be16;
typedef unsigned int __be32;
typedef unsigned int __wsum;
#include <bpf/bpf_helpers.h>

char _license[] SEC("license") = "GPL";

struct task_struct;

struct sched_ext_ops {
	void (*enqueue)(struct task_struct *p, u64 f);
	char pad[1 << 20];
	u64 flags;
	u32 timeout_ms;
	char name[8];
};

SEC("struct_ops/adv_enqueue")
void adv_enqueue(unsigned long long *ctx)
{
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
