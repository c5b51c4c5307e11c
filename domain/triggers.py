"""The trigger kinds the queue carries: each kind's payload model and its retry policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.release import validate_tag


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuildTrigger(Payload):
    """Flow 22: build an automation version. The tenant here is a hint; the job re-reads the store."""

    tenant_id: str = Field(min_length=1)
    project_id: str = Field(min_length=1)
    automation_version_id: str = Field(min_length=1)
    workflow_binding_id: str = Field(min_length=1)


class ReleaseTrigger(Payload):
    """Release builds: from a GitHub `release` webhook or a launch."""

    tag: str = Field(min_length=1, max_length=200)
    name: str | None = None
    prerelease: bool = False
    repositories: list[str] | None = None  # None: every repository of the graph
    source: Literal["webhook", "api", "ui"] = "webhook"
    delivery_id: str | None = None

    @field_validator("tag")
    @classmethod
    def _git_ref_name(cls, tag: str) -> str:
        return validate_tag(tag)  # the queue refuses what the webhook and the launch config refuse


class PhaseTrigger(Payload):
    """Seven-phase recovery pipeline: run phase `phase` for one user's sync."""

    tenant_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    sync_id: str = Field(min_length=1)
    phase: int = Field(ge=1, le=7)
    input: dict[str, Any] = Field(default_factory=dict)


class WorkflowTrigger(Payload):
    """Run (or resume) a workflow execution from its state in the store."""

    tenant_id: str = Field(min_length=1)
    workflow_execution_id: str = Field(min_length=1)
    workflow_id: str | None = None  # for the run's tags


class ApprovalTrigger(Payload):
    """An approval of a workflow execution left pending (a decision, or the timeout's on_timeout): the
    workflow engine resumes the execution with this outcome (domain.approvals enqueues it)."""

    tenant_id: str = Field(min_length=1)
    hitl_approval_id: str = Field(min_length=1)
    workflow_execution_id: str = Field(min_length=1)
    outcome: Literal["approve", "reject", "fail"]


@dataclass(frozen=True)
class KindPolicy:
    payload: type[Payload]
    max_attempts: int
    backoff_base_s: float  # the first retry waits about this long, doubling each time
    backoff_max_s: float = 3600.0
    tenant_scoped: bool = True


KINDS: dict[str, KindPolicy] = {
    # A build run that failed as a whole (a run that never started and was failed by run monitoring, a
    # crash) comes back after 5-10 s: its platform calls already had their own retries inside the run.
    "build": KindPolicy(BuildTrigger, max_attempts=3, backoff_base_s=10.0),
    "release": KindPolicy(ReleaseTrigger, max_attempts=2, backoff_base_s=60.0, tenant_scoped=False),
    # A phase trigger's run can fail before it starts (run monitoring's start timeout on a loaded
    # machine): eight attempts, 10 s doubling, give it some 20 minutes before it is dead.
    "phase": KindPolicy(PhaseTrigger, max_attempts=8, backoff_base_s=10.0),
    # A workflow run resumes from the store, so a failed run is simply tried again.
    "workflow": KindPolicy(WorkflowTrigger, max_attempts=5, backoff_base_s=5.0),
    "approval": KindPolicy(ApprovalTrigger, max_attempts=5, backoff_base_s=10.0),
}
