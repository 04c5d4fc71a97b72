"""The LLM agent's tools: names, descriptions and argument models; schemas generated.

Tools that are operations take the operation's own argument model from
``schedagent.opspec`` (so the model, the MCP server and the daemon socket see one
schema). The agent-only tools (stage 1's goal, synthesis, live measurement, the
final choice) and ``verify`` (which takes the agent's own synthesized names as well as
the repository's) have their models here, built from the same field types. Every
input schema sent to the model is generated from these models; none is written by
hand. The handlers still check each argument themselves: the schema guides the
model, it does not bind it.

The Messages API takes a tool as ``{"name", "description", "input_schema"}``, where
``input_schema`` is a JSON schema (draft 2020-12) of ``"type": "object"``: what
pydantic's ``model_json_schema`` produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, Field

from schedagent.models import Direction, WorkloadClass
from schedagent.opspec import Args, NameArgs, NoArgs, Tunables
from schedagent.policy.gate import MAX_SOURCE_BYTES

#: a synthesized policy's name: a stem the repository does not have yet
SYNTH_NAME = r"^[a-z][a-z0-9_]{2,30}$"

CandidateName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description=("a repository policy's name, or the name of one you synthesized"),
    ),
]


class GoalArgs(Args):
    """``state_goal``: stage 1's reading of the observations."""

    workload_class: WorkloadClass
    slo_metric: str = Field(min_length=1, max_length=80)
    slo_direction: Direction
    reasoning: str = Field(min_length=1, max_length=1000)


class CandidateArgs(Args):
    """``verify`` and ``measure``: a policy the agent may name, and tunable overrides."""

    policy: CandidateName
    tunables: Tunables


class SynthesizeArgs(Args):
    """``synthesize``: a new scheduler from a repository policy."""

    name: str = Field(pattern=SYNTH_NAME, description="the new policy's stem")
    base: str = Field(
        min_length=1,
        max_length=64,
        description=("the repository policy it starts from (its policy.yaml is copied)"),
    )
    summary: str = Field(min_length=1, max_length=300)
    source: str = Field(
        min_length=1, max_length=MAX_SOURCE_BYTES, description="the whole sched_ext BPF C source"
    )


class FinishArgs(CandidateArgs):
    """``finish``: the policy to keep (or eevdf), and why."""

    policy: str = Field(
        min_length=1,
        max_length=64,
        description=(
            "a policy that measure said was better, or eevdf to keep the kernel's default"
        ),
    )
    reasoning: str = Field(min_length=1, max_length=2000)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool the model may call."""

    name: str
    description: str
    args: type[BaseModel]
    #: the operation in ``schedagent.opspec`` it is, when it is one
    op: str | None = None

    def anthropic(self) -> dict[str, Any]:
        """The tool as the Messages API takes it, its schema generated from ``args``."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.args.model_json_schema(),
        }


TOOLS: list[ToolSpec] = [
    ToolSpec("state_goal", "Stage 1: state the workload class and its SLO.", GoalArgs),
    ToolSpec(
        "list_policies",
        "The repository: ideas, fit and tunable ranges.",
        NoArgs,
        op="list_policies",
    ),
    ToolSpec("show_policy", "One policy's YAML and BPF C source.", NameArgs, op="show_policy"),
    ToolSpec("verify", "Static gate, clang and the kernel verifier; no attach.", CandidateArgs),
    ToolSpec(
        "synthesize",
        "Write a new scheduler from a base policy and gate it (static "
        "gate, clang, kernel verifier). Errors come back for repair.",
        SynthesizeArgs,
    ),
    ToolSpec(
        "measure",
        "Canary in partial mode, then interleaved live windows against "
        "EEVDF on the target's SLO metric. Returns the verdict and the ratio.",
        CandidateArgs,
    ),
    ToolSpec("finish", "End: the policy to keep (or eevdf) and why.", FinishArgs),
]


def anthropic_tools() -> list[dict[str, Any]]:
    """Every tool in the Messages API's format, in a stable order (the list is cached)."""
    return [tool.anthropic() for tool in TOOLS]
