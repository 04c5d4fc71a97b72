/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: another subsystem's struct_ops (tcp_congestion_ops) in .struct_ops.link, with an `enqueue` member to satisfy the text checks */
// expect: 16 tcp_congestion_ops
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

struct tcp_congestion_ops {
	void *enqueue;
	u32 (*ssthresh)(void *sk);
	char name[16];
};

u32 SA_OPS(adv_ssthresh, void *sk)
{
	return 2;
}

SEC(".struct_ops.link")
struct tcp_congestion_ops adv_cc = {
	.enqueue	= 0,
	.ssthresh	= (void *)adv_ssthresh,
	.name		= "adv",
};
