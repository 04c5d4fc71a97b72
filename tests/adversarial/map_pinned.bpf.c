/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: a map pinned to bpffs with LIBBPF_PIN_BY_NAME, which outlives the daemon */
// expect: 16 LIBBPF_PIN_BY_NAME
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, u32);
	__type(value, u32);
} adv_map SEC(".maps");

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	u32 k = 0;

	bpf_map_lookup_elem(&adv_map, &k);
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
