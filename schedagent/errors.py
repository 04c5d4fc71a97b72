"""The schedagent exception hierarchy.

Every message says what failed, what was observed, what was expected and what to
do next. The same facts are attributes, so callers never parse the text.
"""

from __future__ import annotations


class SchedagentError(Exception):
    """Base of every error schedagent raises on purpose."""

    #: Process exit code the CLI uses for this kind of error.
    exit_code: int = 1


class ConfigError(SchedagentError):
    """A configuration file or command-line value is invalid."""

    exit_code = 2


class ToolMissing(SchedagentError):
    """A host tool that an operation needs is not installed."""

    exit_code = 3

    def __init__(self, tool: str, purpose: str, fix: str) -> None:
        super().__init__(f"{tool} is not installed; it is needed to {purpose}. Fix: {fix}")
        self.tool, self.purpose, self.fix = tool, purpose, fix


class SandboxError(SchedagentError):
    """The micro-VM testbed could not be built or booted."""

    exit_code = 4


class SandboxTimeout(SandboxError):
    """The guest did not finish within its time limit and was killed."""

    #: apart from a dead guest's 4: a hang is not retried (scripts/run-vm-tests.sh)
    exit_code = 7

    def __init__(self, timeout_s: float, console_log: str, tail: str) -> None:
        super().__init__(
            f"the testbed guest did not finish within {timeout_s:.0f} s and was killed. "
            f"Last console lines:\n{tail}\nFull console log: {console_log}. "
            "Raise --timeout-s if the command is just slow."
        )
        self.timeout_s, self.console_log, self.tail = timeout_s, console_log, tail


class PolicyError(SchedagentError):
    """A policy failed validation or could not be built."""

    exit_code = 10


class KernelError(SchedagentError):
    """The kernel refused an operation or lacks a feature."""

    exit_code = 20


class FeatureMissing(KernelError):
    """A kernel feature schedagent needs is absent on this host."""

    exit_code = 21

    def __init__(self, feature: str, observed: str, fix: str) -> None:
        super().__init__(f"{feature} is not available: {observed}. Fix: {fix}")
        self.feature, self.observed, self.fix = feature, observed, fix


class GuardrailViolation(SchedagentError):
    """A request would break a guardrail enforced by the execution layer."""

    exit_code = 30


class AgentError(SchedagentError):
    """The reasoning layer could not produce a usable proposal."""

    exit_code = 40


class GateRejection(PolicyError):
    """The static gate refused a scheduler source before compiling it."""

    exit_code = 11

    def __init__(self, source: str, line: int, rule: str, detail: str) -> None:
        where = f"{source}:{line}" if line else source
        super().__init__(f"static gate rejected {where}: {rule}: {detail}")
        self.source, self.line, self.rule, self.detail = source, line, rule, detail


class CompileError(PolicyError):
    """clang could not compile a scheduler source."""

    exit_code = 12

    def __init__(self, source: str, diagnostics: list[str], excerpt: str) -> None:
        first = diagnostics[0] if diagnostics else "clang failed"
        super().__init__(
            f"compiling {source} failed: {first}\n{excerpt}\n"
            "Fix the source at the line shown and verify again."
        )
        self.source, self.diagnostics, self.excerpt = source, diagnostics, excerpt


class TunableError(PolicyError):
    """A tunable is unknown or outside its declared bounds."""

    exit_code = 13

    def __init__(self, policy: str, key: str, message: str) -> None:
        super().__init__(f"{policy}: tunable {key}: {message}")
        self.policy, self.key = policy, key


class PolicyNotFound(PolicyError):
    """No policy of that name, and no such file."""

    exit_code = 14

    def __init__(self, name: str, known: list[str]) -> None:
        choices = ", ".join(known) or "(none)"
        super().__init__(
            f"no policy or file named {name!r}; built-in policies are: {choices}. "
            "Pass a policy name or the path of a .bpf.c file."
        )
        self.name, self.known = name, known


class Quarantined(PolicyError):
    """The policy failed on this kernel before and is quarantined."""

    exit_code = 15

    def __init__(self, policy: str, reason: str) -> None:
        super().__init__(
            f"{policy} is quarantined on this kernel: {reason}. Fix the policy, or clear "
            f"it with `schedagent policies unquarantine {policy}` if the cause is gone."
        )
        self.policy, self.reason = policy, reason


class ObjectRejection(PolicyError):
    """The compiled object holds something a scheduler may not (the security boundary).

    ``rule`` names the check, ``found`` what the object holds (a helper, kfunc, section,
    map or layout) and ``allowed`` what the check accepts.
    """

    exit_code = 16

    def __init__(self, source: str, rule: str, found: str, allowed: str) -> None:
        super().__init__(
            f"object check refused {source}: {rule}: found {found}; allowed: {allowed}. "
            'A scheduler may only hold one SEC(".struct_ops.link") struct sched_ext_ops, '
            "struct_ops programs, and allow-listed helpers, kfuncs and maps; remove it and "
            "verify again."
        )
        self.source, self.rule, self.found, self.allowed = source, rule, found, allowed


class CompileLimitExceeded(PolicyError):
    """clang hit its time, CPU, memory or output limit and was stopped."""

    exit_code = 17

    def __init__(self, source: str, limit: str, value: int, unit: str) -> None:
        super().__init__(
            f"compiling {source} was stopped: it exceeded the {limit} limit of {value} {unit}. "
            "A scheduler compiles in about a second; look for runaway macro expansion or "
            "huge initialisers."
        )
        self.source, self.limit, self.value, self.unit = source, limit, value, unit


class SchedExtBusy(KernelError):
    """Another BPF scheduler already owns sched_ext."""

    exit_code = 22

    def __init__(self, active: str | None) -> None:
        super().__init__(
            f"sched_ext is already in use by {active or 'another scheduler'}; schedagent "
            "never replaces a scheduler it did not load. Stop that scheduler first "
            "(or `schedagent rollback` if it is ours)."
        )
        self.active = active


class SchedulerLoadError(KernelError):
    """The kernel (usually the BPF verifier) refused to load the scheduler."""

    exit_code = 23

    def __init__(self, policy: str, reason: str, log_tail: str) -> None:
        super().__init__(
            f"loading {policy} failed: {reason}\n--- verifier/libbpf log (tail) ---\n"
            f"{log_tail}\n---\nFix the program at the instruction shown and verify again."
        )
        self.policy, self.reason, self.log_tail = policy, reason, log_tail


class SchedulerExited(KernelError):
    """The scheduler was ejected or exited; carries the kernel's exit info."""

    exit_code = 24

    def __init__(self, policy: str, kind: int, kind_name: str, reason: str, message: str) -> None:
        super().__init__(
            f"{policy} exited: {kind_name} (kind {kind}): {reason}"
            + (f": {message}" if message else "")
            + ". The system is back on EEVDF."
        )
        self.policy, self.kind, self.kind_name = policy, kind, kind_name
        self.reason, self.message = reason, message


class ObserverBusy(KernelError):
    """Every group of the observer is being read by a window right now."""

    exit_code = 26

    def __init__(self, groups: int) -> None:
        super().__init__(
            f"the observer watches {groups} targets and a window is reading every one of "
            "them; try again when one ends, or watch fewer targets at once"
        )


class TargetGone(KernelError):
    """The target process does not exist or exited."""

    exit_code = 25

    def __init__(self, pid: int) -> None:
        super().__init__(
            f"process {pid} does not exist (or exited); pass the pid of a running "
            "process (see `ps -e`)."
        )
        self.pid = pid


class TargetRefused(GuardrailViolation):
    """A pid or cgroup given as a target is outside what schedagent may act on."""

    exit_code = 31

    def __init__(self, kind: str, value: object, expected: str, fix: str) -> None:
        shown = repr(value[:200]) if isinstance(value, str) else str(value)
        super().__init__(f"{kind} {shown} refused: expected {expected}. Fix: {fix}")
        self.kind, self.value, self.expected, self.fix = kind, value, expected, fix


class HostControlsUnsupported(GuardrailViolation):
    """A whole-system policy would override cgroup CPU controls it does not implement."""

    exit_code = 32

    def __init__(
        self, policy: str, controls: list[str], needed: list[str], supported: list[str]
    ) -> None:
        shown = "; ".join(controls[:5]) + (
            f"; and {len(controls) - 5} more" if controls[5:] else ""
        )
        super().__init__(
            f"{policy} was refused for the whole system: {shown}, and under sched_ext only the "
            f"BPF scheduler enforces them. Expected a policy that declares and implements "
            f"cgroup support for {', '.join(needed)} (policy.yaml `cgroup: [...]` and "
            f"sched_ext's cgroup ops); {policy} supports {', '.join(supported) or 'none'}. "
            "Fix: give a target (pid or cgroup) to run it in partial mode on that target only, "
            "pick a policy with that support (`schedagent policies list`; vtime honours "
            "cpu.weight), or clear the limits (cpu.max 'max', cpu.weight 100)"
        )
        self.policy, self.controls, self.needed, self.supported = (
            policy,
            controls,
            needed,
            supported,
        )


class StoreUnavailable(SchedagentError):
    """The SQLite store cannot be opened or written (missing, corrupted, read-only)."""

    exit_code = 5

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"the state database {path} is unusable: {reason}. `schedagent rollback` still "
            "works without it; to recover, move the file aside (it is recreated empty) or "
            "restore it from a backup, and check the directory is writable"
        )
        self.path, self.reason = path, reason


class Cancelled(SchedagentError):
    """A long operation stopped because whoever asked for it went away."""

    exit_code = 6

    def __init__(self, op: str) -> None:
        super().__init__(
            f"{op} stopped: the client that asked for it hung up (its socket closed); what it "
            "had attached or changed was put back as on any other exit. Run it again and keep "
            "the client running, or run it in the client's own process without the daemon"
        )
        self.op = op
