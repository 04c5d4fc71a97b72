"""Respect the host's cgroup CPU controls before running a policy on every task (issue 17).

Under a whole-system sched_ext scheduler the kernel no longer enforces ``cpu.max``
(CFS bandwidth) or ``cpu.weight`` on its own: only a BPF scheduler that implements
sched_ext's cgroup ops (``cgroup_init``/``cgroup_set_weight``, ``cgroup_set_bandwidth``)
sees them. So before a whole-system attach the engine asks :func:`place` where the
policy may run. A policy honours a control when its ``policy.yaml`` declares it
(``cgroup: [weight, bandwidth]``) *and* its compiled object sets the ops that carry
it; where a populated cgroup has a control the policy does not honour, a request
with a target is confined to partial mode (only the target's threads move) and one
without is refused with :class:`~schedagent.errors.HostControlsUnsupported`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from schedagent.errors import HostControlsUnsupported
from schedagent.kernel.cgroupfs import MAX_SCAN_CGROUPS, MAX_SCAN_DEPTH, ControlScan
from schedagent.policy.repo import PolicySource

log = logging.getLogger(__name__)

#: The ``struct sched_ext_ops`` members each kind of support needs in the object: a
#: weight is given at ``cgroup_init`` and changed by ``cgroup_set_weight``; a limit is
#: given at ``cgroup_init`` and changed by ``cgroup_set_bandwidth`` (6.17+).
REQUIRED_OPS: dict[str, frozenset[str]] = {
    "weight": frozenset({"cgroup_init", "cgroup_set_weight"}),
    "bandwidth": frozenset({"cgroup_init", "cgroup_set_bandwidth"}),
}
ALL_CONTROLS = frozenset(REQUIRED_OPS)


def supported(policy: PolicySource, ops_members: tuple[str, ...]) -> frozenset[str]:
    """The cgroup controls ``policy`` honours: declared in its YAML and implemented."""
    declared = set(policy.meta.cgroup) if policy.meta is not None else set()
    members = set(ops_members)
    return frozenset(kind for kind in declared if REQUIRED_OPS[kind] <= members)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a requested whole-system policy may run."""

    #: True: only the target's threads (partial mode); False: every task, as asked
    confined: bool
    #: why it was confined (empty when it was not): the cgroups and what was missing
    note: str = ""


def place(
    policy: PolicySource,
    ops_members: tuple[str, ...],
    scan: ControlScan,
    has_target: bool,
) -> Placement:
    """Whole system when the policy honours every control found; else partial mode on the
    target, or :class:`HostControlsUnsupported` when there is no target to confine it to."""
    if not scan.controls and not scan.truncated:
        return Placement(confined=False)
    have = supported(policy, ops_members)
    unmet = [c for c in scan.controls if not c.needs <= have]
    needed_set = {kind for c in unmet for kind in c.needs} - have
    described = [c.describe() for c in unmet]
    if scan.truncated:
        # the cgroups past the limit were not read: any of them may be limited or
        # weighted, so only a policy that honours both controls runs on every task
        incomplete = (
            f"the cgroup walk read {scan.scanned} cgroups and not the rest (at most "
            f"{MAX_SCAN_CGROUPS}, {MAX_SCAN_DEPTH} deep, each readable), so their controls "
            "are unknown"
        )
        log.warning("%s: %s", policy.name, incomplete)
        if not ALL_CONTROLS <= have:
            described.append(incomplete)
            needed_set |= ALL_CONTROLS - have
    if not needed_set:
        return Placement(confined=False)
    needed = sorted(needed_set)
    if not has_target:
        raise HostControlsUnsupported(policy.name, described, needed, sorted(have))
    shown = "; ".join(described[:3]) + (f"; and {len(described) - 3} more" if described[3:] else "")
    note = (
        f"confined to partial mode: {shown}; {policy.name} does not declare and implement "
        f"cgroup {' and '.join(needed)} support"
    )
    log.warning("%s: %s", policy.name, note)
    return Placement(confined=True, note=note)
