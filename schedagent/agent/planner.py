"""The offline planner: rules from a profile to ranked candidates, plus history.

Deterministic and network-free. The rules say which policies suit a workload
class; the machine's own history (A/B verdicts recorded by ``bench`` and
``tune`` for the same class) reorders them, so what won here before is tried
first and what lost is tried last. Tunable variants of the leading policy are
generated inside each tunable's declared bounds, never outside them.

Candidates are interventions, not only policies: EEVDF's own knobs on the target
(nice, a custom slice, SCHED_FIFO) are proposed beside the policies for the classes
where a service competes with other work. Each kind has an intrusiveness rank; tune
keeps the least intrusive one that screened ``better`` and reached the SLO
(``report.choose``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from schedagent.models import INTRUSIVENESS, Knob, WorkloadClass, WorkloadProfile
from schedagent.policy import repo

#: which policies to try first for each class (ideas, in order of expected fit)
RULES: dict[WorkloadClass, list[str]] = {
    "mixed": ["target", "latency", "vtime"],
    "latency-critical": ["target", "latency", "vtime"],
    "interactive": ["latency", "vtime", "target"],
    "messaging": ["locality", "fifo", "vtime"],
    "throughput": ["batch", "vtime", "locality"],
    "batch": ["batch", "fifo", "vtime"],
    "io-bound": ["latency", "vtime"],
}

#: policies that only make sense with a target to serve
NEEDS_TARGET = {"target"}

#: EEVDF knobs to try on the target, by class, least intrusive first: what an
#: administrator would do before reaching for a BPF scheduler. Classes whose target is
#: the whole machine's work (throughput, batch) get none: raising all of it changes
#: nothing relative to itself.
KNOB_RULES: dict[WorkloadClass, list[str]] = {
    "mixed": ["nice:-10", "slice:1ms", "fifo:1"],
    "latency-critical": ["nice:-10", "slice:1ms", "fifo:1"],
    "interactive": ["nice:-10", "slice:1ms"],
    "io-bound": ["nice:-10"],
    # measured in one boot: fifo:1 0.71x EEVDF's completion time, nice:-10 1.81x, slice:1ms
    # 1.37x (a knob on every process of the workload changes their mutual order too)
    "messaging": ["fifo:1"],
}

InterventionKind = Literal["knob", "policy"]

#: how intrusive each kind of intervention is (``models.INTRUSIVENESS``)
RANK = INTRUSIVENESS


def rank_of(kind: str, spec: str) -> int:
    """The intrusiveness rank of an intervention (1: least)."""
    if kind == "knob":
        return RANK[Knob.parse(spec).kind]
    return RANK["policy"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A policy with tunables, and why it is on the list."""

    policy: str
    overrides: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    #: ``knob``: ``policy`` is an EEVDF knob's label (``nice:-10``)
    kind: InterventionKind = "policy"

    @property
    def label(self) -> str:
        sets = ",".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        return f"{self.policy}[{sets}]" if sets else self.policy


def rank(
    profile: WorkloadProfile, history: dict[str, dict[str, dict[str, int]]], limit: int = 3
) -> list[Candidate]:
    """Up to ``limit`` policies for this profile, best first.

    ``history`` is ``{policy: {class: {"wins": n, "losses": n, "ties": n}}}``.
    """
    cls = profile.workload_class
    base = [p for p in RULES.get(cls, ["vtime"]) if p in repo.builtin_names()]

    def score(item: tuple[int, str]) -> tuple[int, int]:
        index, name = item
        h = history.get(name, {}).get(cls, {})
        return (h.get("losses", 0) - h.get("wins", 0), index)

    ordered = [name for _, name in sorted(enumerate(base), key=score)]
    out = []
    for name in ordered[:limit]:
        h = history.get(name, {}).get(cls, {})
        why = f"rule: {name} suits {cls} work"
        if h:
            why += (
                f"; history on this machine for {cls}: {h.get('wins', 0)} wins, "
                f"{h.get('losses', 0)} losses, {h.get('ties', 0)} ties"
            )
        out.append(Candidate(name, {}, why))
    return out


#: EEVDF knobs on the competing work, tried only where the caller named it (``others``)
OTHERS_KNOBS = ["others-batch", "others-idle"]


def knobs(profile: WorkloadProfile, limit: int = 3, *, others: bool = False) -> list[Candidate]:
    """Up to ``limit`` EEVDF knobs for this profile, least intrusive first: on the target's
    threads, and with ``others`` (the caller named the competing work) also on those.
    Knobs on the target come first within a rank: they touch nobody else."""
    cls = profile.workload_class
    specs = list(KNOB_RULES.get(cls, []))
    if others and specs:
        specs += OTHERS_KNOBS
    specs = sorted(specs, key=lambda spec: rank_of("knob", spec))[:limit]
    return [
        Candidate(
            spec,
            {},
            (
                f"EEVDF knob on the competing work you named, for {cls} work"
                if spec in OTHERS_KNOBS
                else f"EEVDF knob: what an administrator tries first for {cls} work"
            )
            + f" (intrusiveness {rank_of('knob', spec)} of {RANK['policy']}, no BPF)",
            "knob",
        )
        for spec in specs
    ]


def variants(cand: Candidate, limit: int = 2) -> list[Candidate]:
    """Tunable variants of a candidate: its main time knob halved and doubled, in bounds."""
    if cand.kind == "knob":
        return []
    meta = repo.resolve(cand.policy).meta
    if meta is None or not meta.tunables:
        return []
    name = next((k for k in meta.tunables if k.endswith("slice_ns")), next(iter(meta.tunables)))
    spec = meta.tunables[name]
    current = cand.overrides.get(name, spec.default)
    out = []
    for factor, word in ((0.5, "halved"), (2.0, "doubled")):
        value = int(min(spec.max, max(spec.min, current * factor)))
        if value != current:
            out.append(
                Candidate(
                    cand.policy,
                    {**cand.overrides, name: value},
                    f"{name} {word} from {current} ({spec.unit}, range {spec.min}..{spec.max})",
                )
            )
    return out[:limit]
