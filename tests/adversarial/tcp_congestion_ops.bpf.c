/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: another subsystem's struct_ops (tcp_congestion_ops) in .struct_ops.link, with a decoy .enqueue initialiser for the text checks */
// expect: 16 tcp_congestion_ops
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";

/* only for the text check, which looks for an .enqueue initialiser */
struct { int enqueue; } adv_decoy = { .enqueue = 1 };

u32 SA_OPS(adv_ssthresh, struct sock *sk)
{
	return 2;
}

SEC(".struct_ops.link")
struct tcp_congestion_ops adv_cc = {
	.ssthresh	= (void *)adv_ssthresh,
	.name		= "adv",
};
