/* SPDX-License-Identifier: GPL-2.0 */
/* Tries: an extern variable (__kconfig), which is not a kfunc */
// expect: 16 LINUX_KERNEL_VERSION
#include <schedagent/common.bpf.h>

char _license[] SEC("license") = "GPL";
extern int LINUX_KERNEL_VERSION __kconfig;

void SA_OPS(adv_enqueue, struct task_struct *p, u64 enq_flags)
{
	if (LINUX_KERNEL_VERSION == 0)
		return;
	sa_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops adv_ops = {
	.enqueue	= (void *)adv_enqueue,
	.name		= "adv",
};
