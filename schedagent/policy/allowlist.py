"""What a scheduler object may use: the allow-lists of the verification gates.

One place declares them. The object check (:mod:`schedagent.policy.objcheck`)
enforces them on the compiled ELF, which is the security boundary; the static
gate (:mod:`schedagent.policy.gate`) uses the same names as a fast first filter
on the text. A CPU scheduler needs queues, clocks, per-task storage and the
sched_ext kfuncs; it never needs to write user memory, send signals, attach to
other hooks or pin anything, so none of those are here.
"""

from __future__ import annotations

#: BPF helpers (``call`` with src_reg 0, imm = the helper id from ``enum bpf_func_id``,
#: which is uapi and never renumbered). The built-in policies use 1, 5, 115 and 156.
HELPERS: dict[str, int] = {
    "bpf_map_lookup_elem": 1,
    "bpf_map_update_elem": 2,
    "bpf_map_delete_elem": 3,
    "bpf_ktime_get_ns": 5,
    "bpf_trace_printk": 6,
    "bpf_get_prandom_u32": 7,
    "bpf_get_smp_processor_id": 8,
    "bpf_get_current_pid_tgid": 14,
    "bpf_map_push_elem": 87,
    "bpf_map_pop_elem": 88,
    "bpf_map_peek_elem": 89,
    "bpf_spin_lock": 93,
    "bpf_spin_unlock": 94,
    "bpf_probe_read_kernel": 113,
    "bpf_probe_read_kernel_str": 115,
    "bpf_jiffies64": 118,
    "bpf_ktime_get_boot_ns": 125,
    "bpf_task_storage_get": 156,
    "bpf_task_storage_delete": 157,
    "bpf_get_current_task_btf": 158,
    "bpf_ktime_get_coarse_ns": 160,
    "bpf_for_each_map_elem": 164,
    "bpf_trace_vprintk": 177,
    "bpf_loop": 181,
    "bpf_kptr_xchg": 194,
    "bpf_map_lookup_percpu_elem": 195,
    "bpf_cgrp_storage_get": 210,
    "bpf_cgrp_storage_delete": 211,
}

#: Helper id -> name, for messages.
HELPER_NAMES: dict[int, str] = {v: k for k, v in HELPERS.items()}

#: sched_ext kfuncs, old and new names (6.13 renamed dispatch/consume, see SCHED_EXT_FACTS).
SCX_KFUNCS = frozenset(
    """
scx_bpf_dsq_insert scx_bpf_dsq_insert_vtime scx_bpf_dispatch scx_bpf_dispatch_vtime
scx_bpf_dsq_move_to_local scx_bpf_consume scx_bpf_dsq_move scx_bpf_dsq_move_vtime
scx_bpf_dsq_move_set_slice scx_bpf_dsq_move_set_vtime scx_bpf_dispatch_from_dsq
scx_bpf_dispatch_vtime_from_dsq scx_bpf_dispatch_from_dsq_set_slice
scx_bpf_dispatch_from_dsq_set_vtime scx_bpf_dispatch_nr_slots scx_bpf_dispatch_cancel
scx_bpf_create_dsq scx_bpf_destroy_dsq scx_bpf_dsq_nr_queued scx_bpf_dsq_peek
scx_bpf_kick_cpu scx_bpf_reenqueue_local scx_bpf_select_cpu_dfl scx_bpf_select_cpu_and
scx_bpf_test_and_clear_cpu_idle scx_bpf_pick_idle_cpu scx_bpf_pick_any_cpu
scx_bpf_pick_idle_cpu_node scx_bpf_pick_any_cpu_node
scx_bpf_get_idle_cpumask scx_bpf_get_idle_smtmask scx_bpf_put_idle_cpumask
scx_bpf_get_idle_cpumask_node scx_bpf_get_idle_smtmask_node
scx_bpf_get_online_cpumask scx_bpf_get_possible_cpumask scx_bpf_put_cpumask
scx_bpf_nr_cpu_ids scx_bpf_nr_node_ids scx_bpf_cpu_node scx_bpf_task_running
scx_bpf_task_cpu scx_bpf_cpu_rq scx_bpf_task_cgroup scx_bpf_now scx_bpf_events
scx_bpf_cpuperf_cap scx_bpf_cpuperf_cur scx_bpf_cpuperf_set
scx_bpf_task_set_dsq_vtime scx_bpf_task_set_slice scx_bpf_dsq_reenq scx_bpf_cpu_curr
scx_bpf_error_bstr scx_bpf_exit_bstr scx_bpf_dump_bstr
""".split()
)

#: Generic kfuncs a scheduler may call (task/cgroup references, cpumasks, RCU, iterators).
GENERIC_KFUNCS = frozenset(
    """
bpf_rcu_read_lock bpf_rcu_read_unlock bpf_task_from_pid bpf_task_acquire bpf_task_release
bpf_cgroup_from_id bpf_cgroup_acquire bpf_cgroup_release bpf_cgroup_ancestor
bpf_cpumask_create bpf_cpumask_release bpf_cpumask_acquire bpf_cpumask_set_cpu
bpf_cpumask_clear_cpu bpf_cpumask_test_cpu bpf_cpumask_first bpf_cpumask_first_zero
bpf_cpumask_and bpf_cpumask_or bpf_cpumask_copy bpf_cpumask_clear bpf_cpumask_setall
bpf_cpumask_empty bpf_cpumask_full bpf_cpumask_weight bpf_cpumask_any_distribute
bpf_cpumask_any_and_distribute bpf_cpumask_intersects bpf_cpumask_subset
bpf_cpumask_test_and_set_cpu bpf_cpumask_test_and_clear_cpu bpf_cpumask_equal
bpf_cpumask_first_and bpf_obj_new_impl bpf_obj_drop_impl
bpf_iter_num_new bpf_iter_num_next bpf_iter_num_destroy
""".split()
)

#: Every kfunc (``__ksym`` extern function) an object may call.
KFUNCS = SCX_KFUNCS | GENERIC_KFUNCS

#: Macros from libbpf's and the project's headers that read like calls in the source.
HEADER_MACROS = frozenset(
    """
scx_bpf_error scx_bpf_exit scx_bpf_dump bpf_printk bpf_for bpf_for_each bpf_repeat
bpf_core_read bpf_core_read_str bpf_core_field_exists bpf_core_type_exists
bpf_core_enum_value_exists bpf_core_enum_value bpf_core_field_size bpf_core_type_size
bpf_core_field_offset bpf_core_type_id_kernel bpf_ksym_exists bpf_obj_new bpf_obj_drop
""".split()
)

#: Every ``bpf_``/``scx_bpf_`` name the static gate lets a source mention.
SOURCE_NAMES = frozenset(HELPERS) | KFUNCS | HEADER_MACROS

#: ``BPF_MAP_TYPE_*`` values a scheduler's own maps may have (uapi ``enum bpf_map_type``).
#: Absent on purpose: PROG_ARRAY (tail calls into other programs), PERF_EVENT_ARRAY and
#: RINGBUF (streams to user space), *_OF_MAPS, sockets/devices, ARENA and STRUCT_OPS.
MAP_TYPES: dict[int, str] = {
    1: "HASH",
    2: "ARRAY",
    5: "PERCPU_HASH",
    6: "PERCPU_ARRAY",
    9: "LRU_HASH",
    10: "LRU_PERCPU_HASH",
    22: "QUEUE",
    23: "STACK",
    29: "TASK_STORAGE",
    30: "BLOOM_FILTER",
    32: "CGRP_STORAGE",
}

#: Names of refused map types, for messages.
REFUSED_MAP_TYPES: dict[int, str] = {
    3: "PROG_ARRAY",
    4: "PERF_EVENT_ARRAY",
    7: "STACK_TRACE",
    8: "CGROUP_ARRAY",
    11: "LPM_TRIE",
    12: "ARRAY_OF_MAPS",
    13: "HASH_OF_MAPS",
    14: "DEVMAP",
    15: "SOCKMAP",
    16: "CPUMAP",
    17: "XSKMAP",
    18: "SOCKHASH",
    19: "CGROUP_STORAGE",
    20: "REUSEPORT_SOCKARRAY",
    21: "PERCPU_CGROUP_STORAGE",
    24: "SK_STORAGE",
    25: "DEVMAP_HASH",
    26: "STRUCT_OPS",
    27: "RINGBUF",
    28: "INODE_STORAGE",
    31: "USER_RINGBUF",
    33: "ARENA",
}


def kfunc_base(name: str) -> str:
    """The kernel name a kfunc extern resolves to: libbpf drops a ``___flavour`` suffix."""
    return name.split("___")[0]
