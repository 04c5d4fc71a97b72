"""The operations schedagent offers, declared once: name, description, arguments, privilege.

This module is pure: pydantic argument models and a table, no system access. The
front ends read it to build their surfaces (the CLI's option bounds, the MCP tools'
input schemas, the LLM's tool schemas), ``schedagent.ops`` binds each entry to its
handler, and ``schedagent.client`` reads ``where`` to decide which process runs a
call. Arguments are validated against these models wherever a call enters (the
daemon socket's clients are untrusted, so ``ops`` validates again, not only the
MCP schema).

``where`` says which process may run an operation:

- ``shared``: the running daemon when its socket answers, else the calling process.
  The MCP server and the daemon socket offer these.
- ``local``: only the calling process, with the caller's own rights. These name files
  on the caller's machine or run until the caller interrupts them, so the daemon
  socket and MCP never offer them (a root daemon reading a path a client names would
  act for the client with rights it lacks).
- ``daemon``: only the running daemon holds the state they act on (its proposals,
  its configured targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schedagent.errors import ConfigError
from schedagent.models import KNOB_HELP, PEER_KNOBS, Knob, ModelBudget, TuneBudget

Where = Literal["shared", "local", "daemon"]

#: the longest a policy is held on the system in one call (``hold_policy``)
MAX_HOLD_S = 86_400.0
#: benchmarks of many arms and levels, and whole suites, run for hours
_BENCH_REPLY_S = 2 * 86_400.0


class Args(BaseModel):
    """Base of every argument model: unknown arguments are errors, not ignored."""

    model_config = ConfigDict(extra="forbid")


PolicyName = Annotated[
    str,
    Field(
        min_length=1, max_length=64, description="a repository policy's name (see list_policies)"
    ),
]
PolicyRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description=("a repository policy's name, or an artifact_id from verify_policy"),
    ),
]
VerifiedRef = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description=(
            "artifact_id from verify_policy, or a policy name verified with the same tunables"
        ),
    ),
]
PolicyPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=4096,
        description=(
            "a repository policy's name, or a path on this machine to a .bpf.c file or a "
            "policy directory"
        ),
    ),
]


def _knob(spec: str) -> str:
    try:
        return Knob.parse(spec).label
    except ConfigError as err:
        raise ValueError(str(err)) from err


KnobSpec = Annotated[
    str,
    Field(min_length=1, max_length=32, description=f"an EEVDF knob arm: {KNOB_HELP}"),
    AfterValidator(_knob),
]
Tunables = Annotated[
    dict[str, int],
    Field(
        default_factory=dict,
        max_length=32,
        description="tunable overrides {name: integer}; see show_policy for names and bounds",
    ),
]
Pid = Annotated[
    int | None,
    Field(ge=1, le=4_194_304, description=("process id; its threads and children are included")),
]
Cgroup = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=4096,
        description=("cgroup v2 path (relative to /sys/fs/cgroup), instead of pid"),
    ),
]


class NoArgs(Args):
    """No arguments."""


class TargetArgs(Args):
    """A pid (with its threads and children) or a cgroup v2 path: exactly one."""

    pid: Pid = None
    cgroup: Cgroup = None

    @model_validator(mode="after")
    def _one(self) -> TargetArgs:
        if (self.pid is None) == (self.cgroup is None):
            raise ValueError("give exactly one of pid or cgroup")
        return self


class OptionalTargetArgs(Args):
    """At most one of a pid or a cgroup v2 path; neither means every task."""

    pid: Pid = None
    cgroup: Cgroup = None

    @model_validator(mode="after")
    def _at_most_one(self) -> OptionalTargetArgs:
        if self.pid is not None and self.cgroup is not None:
            raise ValueError("give pid or cgroup, not both")
        return self


class WindowArgs(TargetArgs):
    """A target and how long to watch it."""

    duration_s: float = Field(5.0, ge=0.5, le=600, description="seconds to watch")


class ProfileArgs(WindowArgs):
    """``profile_workload``: a target, a window, an optional explicit SLO, bcc histograms."""

    slo: str | None = Field(
        None,
        min_length=1,
        max_length=80,
        description=("explicit SLO, e.g. p99_latency<=2ms; overrides the inferred one"),
    )
    deep: bool = Field(
        False,
        description=(
            "also attach the bcc probes for wakeup-latency and burst histograms (bcc, root)"
        ),
    )


class NameArgs(Args):
    """One policy, by name."""

    name: PolicyName


class VerifyArgs(Args):
    """A repository policy by name, or new sched_ext BPF C source: exactly one."""

    name: PolicyName | None = None
    source: str | None = Field(
        None, min_length=1, max_length=4 * 64 * 1024, description="sched_ext BPF C"
    )
    tunables: Tunables

    @model_validator(mode="after")
    def _one(self) -> VerifyArgs:
        if (self.name is None) == (self.source is None):
            raise ValueError(
                "give exactly one of name (a repository policy) or source (sched_ext BPF C)"
            )
        return self


class VerifyPathArgs(Args):
    """A policy by name or by a path on the caller's machine."""

    policy: PolicyPath
    tunables: Tunables


class PolicyArgs(Args):
    """A policy and tunable overrides."""

    policy: PolicyRef
    tunables: Tunables


class LoadArgs(TargetArgs):
    """``load_policy``: a verified artifact, run as a canary on a target, for a bounded time."""

    policy: VerifiedRef
    tunables: Tunables
    duration_s: float = Field(10.0, ge=1, le=600, description="seconds to keep it attached")


class KnobArgs(TargetArgs):
    """``load_knob``: an EEVDF knob on a target's threads, for a bounded time."""

    knob: KnobSpec
    duration_s: float = Field(10.0, ge=1, le=600, description="seconds to hold it")


class HoldArgs(OptionalTargetArgs):
    """``hold_policy``: a verified artifact on every task, for a bounded time."""

    policy: VerifiedRef
    tunables: Tunables
    duration_s: float = Field(
        3600.0,
        ge=1,
        le=MAX_HOLD_S,
        description=(
            "seconds to hold it (an in-process caller may end it earlier with SIGINT/SIGTERM)"
        ),
    )


class RunArgs(OptionalTargetArgs):
    """``run_policy``: any policy the caller can name, with the guard on, until it ends."""

    policy: PolicyPath
    tunables: Tunables
    duration_s: float | None = Field(
        None, ge=0.1, description=("seconds; none means until interrupted (SIGINT/SIGTERM)")
    )
    timeout_ms: int | None = Field(
        None, ge=100, le=30_000, description="the kernel's watchdog timeout"
    )
    switch_all: bool = Field(
        False,
        description=(
            "with a target: run every task on the policy and use the target only for the "
            "policy's target map (no canary)"
        ),
    )


class BenchArgs(Args):
    """``benchmark``: interleaved runs of one workload under a baseline and policies."""

    workload: str = Field(min_length=1, max_length=64, description="see list_workloads")
    policies: list[PolicyRef] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "the arms: repository policies or artifact_ids; `eevdf` names the kernel default "
            "(the default, an A/A run, when neither policies nor knobs are given)"
        ),
    )
    knobs: list[KnobSpec] = Field(
        default_factory=list,
        max_length=8,
        description="EEVDF knob arms beside the policies (what an administrator would try)",
    )
    tunables: Tunables
    baseline: PolicyRef = "eevdf"
    runs: int = Field(5, ge=2, le=100, description="measured runs per arm")
    levels: list[str] = Field(
        default_factory=list,
        max_length=8,
        description=("load levels to run (default: all of the workload's)"),
    )
    quick: bool = Field(False, description="small sizes (smoke runs)")
    seed: int = Field(0, ge=0, le=2**31, description="seed of the interleaving order")

    @model_validator(mode="after")
    def _tunables_for_one(self) -> BenchArgs:
        if self.tunables and len(self.policies) != 1:
            raise ValueError("tunables apply to one policy; name exactly one with them")
        return self


class SuiteArgs(Args):
    """``bench_suite``: every workload × policy against EEVDF."""

    policies: list[PolicyName] | None = Field(
        None, max_length=32, description="default: every repository policy"
    )
    workloads: list[str] | None = Field(
        None, max_length=32, description="default: every built-in workload"
    )
    knobs: list[KnobSpec] = Field(
        default_factory=lambda: list(PEER_KNOBS),
        max_length=8,
        description="EEVDF knob arms beside the policies; default: " + ", ".join(PEER_KNOBS),
    )
    runs: int = Field(5, ge=2, le=100, description="measured runs per arm")
    quick: bool = Field(False, description="small sizes (smoke runs)")
    seed: int = Field(0, ge=0, le=2**31, description="seed of the interleaving order")


class TuneArgs(TargetArgs, TuneBudget, ModelBudget):
    """``tune``: a target, the agent, and the budgets (their bounds are TuneBudget's and
    ModelBudget's, declared once in ``schedagent.models``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    slo: str | None = Field(
        None,
        min_length=1,
        max_length=80,
        description=("explicit SLO, e.g. p99_latency<=2ms; overrides the inferred one"),
    )
    agent: Literal["offline", "anthropic"] = Field(
        "offline",
        description=("offline (the built-in planner, no network) or anthropic (Claude chooses)"),
    )
    model: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description=(
            "model for agent anthropic (default $SCHEDAGENT_MODEL or the built-in default)"
        ),
    )
    latency_log: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description=(
            "the target's access log: one request per line ending in its latency in us; "
            "windows are then judged on the p99 of the latencies logged in them"
        ),
    )
    dry_run: bool = Field(False, description="propose and gate candidates only")
    others: list[Annotated[int, Field(ge=2, le=4_194_304)]] = Field(
        default_factory=list,
        max_length=64,
        description=(
            "pids of the competing work (with their threads and children) that tune may "
            "move to SCHED_BATCH/SCHED_IDLE as candidates; none: others are never touched"
        ),
    )


class HistoryArgs(Args):
    """How many records to return."""

    limit: int = Field(20, ge=1, le=200, description="records of each kind")


class ApproveArgs(Args):
    """A pending proposal of the daemon."""

    id: int = Field(ge=1, description="proposal id (see history)")


class ProposalsArgs(Args):
    """The daemon's proposals, optionally of one status."""

    status: str | None = Field(
        None, min_length=1, max_length=20, description="pending or approved; default: all"
    )


class ApplyArgs(Args):
    """A verified policy for one of the daemon's configured targets."""

    target: str = Field(min_length=1, max_length=64, description="a configured target's name")
    policy: PolicyRef
    tunables: Tunables


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One operation: what it is called, what it does, what it takes, who may run it."""

    name: str
    description: str
    args: type[Args]
    #: changes kernel or persistent state (the socket and the audit treat it so)
    privileged: bool = False
    where: Where = "shared"
    #: how long a client waits for the daemon's reply: the longest the operation may
    #: legitimately run (a wait without bound would hang a client on a stuck daemon)
    reply_timeout_s: float = 3600.0


_SPECS = [
    OpSpec(
        "system_snapshot",
        "sched_ext state, the active policy, topology, load, PSI and quarantine.",
        NoArgs,
    ),
    OpSpec(
        "doctor",
        "What this machine can do for schedagent: sched_ext, BTF, clang, "
        "bpftool, libbpf, bcc, root, KVM and the testbed image, each with a fix.",
        NoArgs,
        where="local",
    ),
    OpSpec(
        "profile_workload",
        "Watch a pid or cgroup; return its workload class, features "
        "and SLO (inferred, or the one given), and with deep the bcc histograms.",
        ProfileArgs,
    ),
    OpSpec(
        "runqueue_latency",
        "Wakeup-to-run latency percentiles of a target (bcc), or "
        "its mean runqueue wait (schedstat) when bcc is not installed.",
        WindowArgs,
    ),
    OpSpec(
        "list_policies",
        "The repository's policies: summary, good fit, status and win/loss history.",
        NoArgs,
    ),
    OpSpec(
        "show_policy",
        "One policy: its YAML (tunables with bounds), source and live counters when it is active.",
        NameArgs,
    ),
    OpSpec(
        "verify_policy",
        "Run a repository policy or new source through the static "
        "gate, clang and the kernel verifier, without attaching. Returns the "
        "artifact_id that load_policy, hold_policy and benchmark accept.",
        VerifyArgs,
        privileged=True,
    ),
    OpSpec(
        "verify_path",
        "Like verify_policy, for a policy named by a path on this "
        "machine (a .bpf.c file or a policy directory) or by name, checked with the "
        "caller's own rights.",
        VerifyPathArgs,
        privileged=True,
        where="local",
    ),
    OpSpec(
        "load_policy",
        "Run a verified policy as a canary: only the target's threads, "
        "for duration_s, guarded; the previous scheduler comes back afterwards, "
        "whatever happens.",
        LoadArgs,
        privileged=True,
    ),
    OpSpec(
        "list_interventions",
        "Every kind of intervention schedagent can make, least intrusive first: EEVDF "
        "knobs (nice, custom slice, SCHED_FIFO/RR, the background to SCHED_BATCH/IDLE) "
        "and sched_ext policies, with what each changes, how it is undone and whether "
        "this host allows it now.",
        NoArgs,
    ),
    OpSpec(
        "load_knob",
        "Apply an EEVDF knob (nice:N, slice:T, fifo:P, rr:P) to a target's threads for "
        "duration_s, journaled before each thread changes; every thread is put back as "
        "it was afterwards, also if schedagent dies meanwhile (the next run restores it).",
        KnobArgs,
        privileged=True,
    ),
    OpSpec(
        "hold_policy",
        "Keep a verified policy on every task for duration_s with the "
        "guard on, the target (if any) filling its target map; the previous scheduler "
        "comes back afterwards. What tune decided is held this way (verify_policy "
        "first). It runs in the caller's process, so Ctrl-C (SIGINT) or SIGTERM ends it "
        "early: a daemon could not see its caller go.",
        HoldArgs,
        privileged=True,
        where="local",
    ),
    OpSpec(
        "run_policy",
        "Attach any policy the caller can name (a path included) with "
        "the guard on, on every task or as a canary on a target, until duration_s "
        "ends or the caller interrupts it; the previous scheduler comes back "
        "afterwards.",
        RunArgs,
        privileged=True,
        where="local",
    ),
    OpSpec(
        "prebuild",
        "Prepare vmlinux.h and compile every repository policy for this kernel ahead of need.",
        NoArgs,
        privileged=True,
    ),
    OpSpec("unquarantine", "Allow a quarantined policy to load again.", NameArgs, privileged=True),
    OpSpec(
        "list_workloads",
        "The built-in benchmark workloads: what they run, their metric, SLO class and load levels.",
        NoArgs,
    ),
    OpSpec(
        "benchmark",
        "A/B the given policies against a baseline (EEVDF by default) on "
        "a built-in workload, interleaved in this boot (minutes). Writes a JSON "
        "record, a markdown table and plots, and records the verdicts.",
        BenchArgs,
        privileged=True,
        reply_timeout_s=_BENCH_REPLY_S,
    ),
    OpSpec(
        "bench_suite",
        "Every workload × policy against EEVDF in this boot (long); records like benchmark.",
        SuiteArgs,
        privileged=True,
        reply_timeout_s=_BENCH_REPLY_S,
    ),
    OpSpec(
        "tune",
        "Profile a target, try EEVDF's knobs and sched_ext policies live against EEVDF, keep "
        "only a proven winner, the least intrusive that reaches the SLO; the system is back "
        "on EEVDF afterwards (hold_policy keeps a winning policy).",
        TuneArgs,
        privileged=True,
        reply_timeout_s=4 * 3600.0,
    ),  # a 2 h budget, plus profiling and compiles
    OpSpec(
        "status",
        "sched_ext state, what schedagent has loaded, quarantine and recent events.",
        NoArgs,
    ),
    OpSpec(
        "rollback",
        "Return the system to EEVDF now, whichever schedagent process holds the policy.",
        NoArgs,
        privileged=True,
    ),
    OpSpec(
        "history",
        "Recent events, the audit trail of privileged actions and the daemon's proposals.",
        HistoryArgs,
    ),
    OpSpec(
        "daemon_status",
        "The daemon's mode, uptime and its targets' policies and phases.",
        NoArgs,
        where="daemon",
    ),
    OpSpec("proposals", "The daemon's proposals (propose mode).", ProposalsArgs, where="daemon"),
    OpSpec(
        "approve",
        "Apply a proposal the daemon made in propose mode, under its guard.",
        ApproveArgs,
        privileged=True,
        where="daemon",
    ),
    OpSpec(
        "apply",
        "Apply a verified policy to one of the daemon's configured targets under its guard.",
        ApplyArgs,
        privileged=True,
        where="daemon",
    ),
]

#: name -> declaration of every operation
SPECS: dict[str, OpSpec] = {spec.name: spec for spec in _SPECS}

#: operations that change kernel or persistent state
PRIVILEGED = frozenset(s.name for s in _SPECS if s.privileged)


def shared() -> list[OpSpec]:
    """The operations the MCP server and the daemon socket offer."""
    return [s for s in _SPECS if s.where == "shared"]


def input_schema(name: str) -> dict[str, object]:
    """The JSON schema of an operation's arguments, generated from its model."""
    return SPECS[name].args.model_json_schema()
