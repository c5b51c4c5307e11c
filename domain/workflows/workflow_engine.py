"""The workflow engine: runs (or resumes) one execution from the state saved in the store.

One call of `run()` is one Dagster run of `workflow_execution`. It reads the execution's step rows,
applies the outcome of any approval decided since the last run, then starts every ready step (all its
dependencies succeeded, or rejected with `on_reject: continue`):

- `service_call`: the intent is recorded first (step `running`, attempt counted, committed), then the
  call is made with no transaction open, with the idempotency key `<execution id>:<step name>`, through
  the one retry policy; the result is recorded in a transaction of its own. A step found `running` when a
  run starts was in flight when an earlier run died: it is sent again with the same key, and the service
  answers with the first call's result instead of doing it twice. A finished step is never called again.
- `approval`: in one transaction, the approval is opened (domain.workflows.approvals, idempotent per execution and
  step) and the step becomes `waiting`. When nothing else can run, the execution becomes
  `waiting_approval` and the run ends: no worker waits for a person. The decision's `approval` trigger
  launches the job again, and this function applies the outcome: approve -> the step succeeds and its
  dependents run; reject -> the execution ends `rejected` (`on_reject: stop`) or the step is `rejected`
  and its dependents run (`continue`); fail (a timeout's default) -> the execution ends `failed`.
- `publish`: the message goes into the batch-jobs outbox (domain.batch.batch_jobs.enqueue, message id
  uuid5(execution, step)) and the step succeeds, in one transaction; the relay publishes it.

Ready service calls run concurrently on a thread pool bounded by `max_parallel`: the steps are I/O
(HTTP calls), and threads inside the one run process cost nothing to start, where a Dagster op per step
costs a process (seconds each: docs/performance.md) and cannot follow a DAG that is data, not code. All store
work stays on the run's main thread, one short transaction at a time.

Two runs of the same execution may overlap (a decision arrives while a run is still finishing another
branch): a step is claimed by a conditional move (pending -> running) under the execution's row lock, so
it is started once; a run that finds a step running that it did not start at its beginning sends it again
with the same key; the run that sees the last step end settles the execution.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from domain.batch import batch_jobs
from domain.core import counters
from domain.core.lifecycle import Actor
from domain.core.models import ExecutionStatus, HitlApproval, StepStatus, WorkflowExecution, WorkflowExecutionStep
from domain.core.store import transaction
from domain.workflows import approvals, decision_fields
from domain.workflows.workflow_definitions import Unresolved, render
from domain.workflows.workflow_states import EXECUTION_FINAL, move_execution, move_step
from domain.workflows.workflows import execution_steps

log = logging.getLogger(__name__)

ENGINE = Actor.system("workflow_engine")
E, T = ExecutionStatus, StepStatus
DONE = (T.SUCCEEDED.value, T.REJECTED.value)  # a dependent may start
PUBLISH_NAMESPACE = uuid.UUID("0b7f8a52-4a0e-5c53-9d8e-1f6f3d2f9a40")  # fixed forever: message ids depend on it


@dataclass(frozen=True)
class ServiceCall:
    execution_id: str
    tenant_id: str
    step: str
    service: str
    method: str
    path: str
    body: Any
    timeout_s: float

    @property
    def idempotency_key(self) -> str:
        return f"{self.execution_id}:{self.step}"


@dataclass(frozen=True)
class CallResult:
    output: dict[str, Any] | None
    attempts: int  # requests sent for this call, retries included
    error: str | None = None


Caller = Callable[[ServiceCall], CallResult]  # never raises: an error is a CallResult with `error`
ExchangeFor = Callable[[str], str]


class ExecutionMissing(LookupError):
    pass


def publish_message_id(execution_id: str, step: str) -> str:
    return str(uuid.uuid5(PUBLISH_NAMESPACE, f"{execution_id}\n{step}"))


def _lock(session: Session, execution_id: str) -> WorkflowExecution:
    """The execution, locked on PostgreSQL (SQLite serialises writers anyway) until the transaction ends."""
    execution = session.get(WorkflowExecution, execution_id, with_for_update=True, populate_existing=True)
    if execution is None:
        raise ExecutionMissing(execution_id)
    return execution


def _final(execution: WorkflowExecution) -> bool:
    return ExecutionStatus(execution.status) in EXECUTION_FINAL


def _end(
    session: Session, execution: WorkflowExecution, steps: list[WorkflowExecutionStep], to: ExecutionStatus, reason: str
) -> None:
    """The execution ends: steps that never started are skipped, open ones cancelled."""
    if _final(execution):
        return
    move_execution(session, execution, to, actor=ENGINE, reason=reason)
    for step in steps:
        if step.status == T.PENDING.value:
            move_step(session, step, T.SKIPPED, actor=ENGINE, reason=f"execution {to.value}")
        elif step.status == T.WAITING.value:
            move_step(session, step, T.CANCELLED, actor=ENGINE, reason=f"execution {to.value}")


def _document(execution: WorkflowExecution, steps: list[WorkflowExecutionStep]) -> dict[str, Any]:
    return {
        "input": execution.input,
        "steps": {s.name: {"output": s.output, "status": s.status} for s in steps if s.status in DONE},
    }


def apply_decisions(session: Session, execution: WorkflowExecution, steps: list[WorkflowExecutionStep]) -> int:
    """Each waiting step whose approval left `pending`: approve -> succeeded; reject -> rejected, and the
    execution `rejected` unless `on_reject` is `continue`; fail -> failed, and the execution `failed`."""

    waiting = [s for s in steps if s.status == T.WAITING.value]
    applied = 0
    for step in waiting:
        approval = session.scalars(
            select(HitlApproval).where(
                HitlApproval.workflow_execution_id == execution.id, HitlApproval.step_name == step.name
            )
        ).one_or_none()
        if approval is None or approval.status == "pending" or approval.outcome is None:
            continue
        output = {
            "approval_id": approval.id,
            "status": approval.status,
            "outcome": approval.outcome,
            "decided_by": approval.decided_by,
            "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
            "comment": approval.decision_comment,
            "fields": approval.field_values or {},  # read by later steps as /steps/<name>/output/fields/<field>
        }
        step.output = output
        reason = f"approval {approval.id} {approval.status} ({approval.outcome})"
        applied += 1
        if approval.outcome == "approve":
            move_step(session, step, T.SUCCEEDED, actor=ENGINE, reason=reason)
        elif approval.outcome == "reject":
            move_step(session, step, T.REJECTED, actor=ENGINE, reason=reason)
            if (approval.on_reject or step.config.get("on_reject", "stop")) != "continue":
                _end(session, execution, steps, E.REJECTED, f"step {step.name}: {reason}")
        else:
            step.error = reason
            move_step(session, step, T.FAILED, actor=ENGINE, reason=reason)
            _end(session, execution, steps, E.FAILED, f"step {step.name}: {reason}")
    return applied


def _ready(steps: list[WorkflowExecutionStep]) -> list[WorkflowExecutionStep]:
    status = {s.name: s.status for s in steps}
    return [s for s in steps if s.status == T.PENDING.value and all(status.get(d) in DONE for d in s.depends_on)]


def _call_for(execution: WorkflowExecution, step: WorkflowExecutionStep, document: dict[str, Any]) -> ServiceCall:
    config = step.config
    return ServiceCall(
        execution_id=execution.id,
        tenant_id=execution.tenant_id,
        step=step.name,
        service=str(config["service"]),
        method=str(config.get("method", "POST")),
        path=str(config["path"]),
        body=render(config.get("body"), document),
        timeout_s=float(config.get("timeout_s", 30.0)),
    )


def _open_approval(session: Session, execution: WorkflowExecution, step: WorkflowExecutionStep) -> None:

    config = step.config
    approval = approvals.open_approval(
        session,
        tenant_id=execution.tenant_id,
        requested_by=execution.requested_by or ENGINE.id,
        assignees=list(config["assignees"]),
        message=str(config["message"]),
        timeout=timedelta(seconds=float(config["timeout_s"])),
        on_timeout=config.get("on_timeout", "reject"),
        on_reject=config.get("on_reject", "stop"),
        workflow_execution_id=execution.id,
        step_name=step.name,
        context={"workflow_id": execution.workflow_id, "version": execution.version, "input": execution.input},
        fields=decision_fields.from_json(config.get("fields")),
    )
    step.output = {"approval_id": approval.id}
    move_step(session, step, T.WAITING, actor=ENGINE, reason=f"approval {approval.id} requested")


def _publish(
    session: Session,
    execution: WorkflowExecution,
    step: WorkflowExecutionStep,
    document: dict[str, Any],
    exchange_for: ExchangeFor,
    outbox_transport: bool,
) -> None:
    config = step.config
    body = render(config.get("body"), document)
    queue_name = str(config["queue"])
    enqueued = batch_jobs.enqueue(
        session,
        queue=queue_name,
        exchange=exchange_for(queue_name),
        message_id=publish_message_id(execution.id, step.name),
        body=body if isinstance(body, dict) else {"value": body},
        headers={"workflow_execution_id": execution.id, "workflow_id": execution.workflow_id, "step": step.name},
        type=str(config.get("type", "workflow.step.published")),
        published=outbox_transport,
    )
    step.output = {"message_id": enqueued.message_id, "queue": enqueued.queue}
    step.attempts += 1
    move_step(session, step, T.SUCCEEDED, actor=ENGINE, reason=f"message {enqueued.message_id} in the outbox")


def _fail_step(
    session: Session,
    execution: WorkflowExecution,
    steps: list[WorkflowExecutionStep],
    step: WorkflowExecutionStep,
    error: str,
) -> None:
    step.error = error[:4000]
    move_step(session, step, T.FAILED, actor=ENGINE, reason=error)
    _end(session, execution, steps, E.FAILED, f"step {step.name} failed: {error}")


def _begin(session: Session, execution_id: str, run_id: str | None) -> tuple[bool, list[ServiceCall]]:
    """Apply decisions, move to running; the calls left in flight by an earlier run, to send again."""
    execution = _lock(session, execution_id)
    if _final(execution):
        return False, []
    steps = execution_steps(session, execution_id)
    apply_decisions(session, execution, steps)
    if _final(execution):
        return False, []
    if execution.status != E.RUNNING.value:
        move_execution(session, execution, E.RUNNING, actor=ENGINE, reason="run started", metadata={"run_id": run_id})
    execution.dagster_run_id = run_id
    document = _document(execution, steps)
    resumed = []
    for step in steps:
        if step.status == T.RUNNING.value and step.kind == "service_call":
            step.attempts += 1
            counters.count(session, "workflow_step_retries")  # sent again: its earlier run died in flight
            resumed.append(_call_for(execution, step, document))
    return True, resumed


def _claim(
    session: Session, execution_id: str, capacity: int, exchange_for: ExchangeFor, outbox_transport: bool
) -> tuple[bool, bool, list[ServiceCall]]:
    """(go on, progressed, calls to send): start what is ready, up to `capacity` service calls."""
    execution = _lock(session, execution_id)
    if _final(execution):
        return False, False, []
    steps = execution_steps(session, execution_id)
    progressed = apply_decisions(session, execution, steps) > 0
    if _final(execution):
        return False, True, []
    calls: list[ServiceCall] = []
    for step in _ready(steps):
        document = _document(execution, steps)
        try:
            if step.kind == "approval":
                _open_approval(session, execution, step)
                progressed = True
            elif step.kind == "publish":
                _publish(session, execution, step, document, exchange_for, outbox_transport)
                progressed = True
            elif capacity > len(calls):
                call = _call_for(execution, step, document)
                step.attempts += 1
                move_step(session, step, T.RUNNING, actor=ENGINE, reason="calling " + call.service)
                calls.append(call)
        except Unresolved as exc:
            _fail_step(session, execution, steps, step, f"body: {exc}")
            return False, True, []
    return True, progressed, calls


def _record(session: Session, call: ServiceCall, result: CallResult) -> None:
    execution = _lock(session, call.execution_id)
    step = session.scalars(
        select(WorkflowExecutionStep).where(
            WorkflowExecutionStep.workflow_execution_id == call.execution_id, WorkflowExecutionStep.name == call.step
        )
    ).one()
    if step.status != T.RUNNING.value:
        log.info(
            "step %s of %s is %s: the call's late result is not recorded", call.step, call.execution_id, step.status
        )
        return
    step.attempts += max(result.attempts - 1, 0)
    counters.count(session, "workflow_step_retries", by=max(result.attempts - 1, 0))
    if result.error is None:
        step.output = result.output
        move_step(session, step, T.SUCCEEDED, actor=ENGINE, reason=f"{call.service} answered")
        return
    _fail_step(session, execution, execution_steps(session, call.execution_id), step, result.error)


def _settle(session: Session, execution_id: str) -> str:
    """When this run has nothing left to do: the execution's status from its steps."""
    execution = _lock(session, execution_id)
    if _final(execution):
        return execution.status
    steps = execution_steps(session, execution_id)
    statuses = {s.status for s in steps}
    if T.RUNNING.value in statuses or _ready(steps):
        return execution.status  # another run holds a step: it settles the execution
    if T.FAILED.value in statuses:
        _end(session, execution, steps, E.FAILED, "a step failed")
    elif T.WAITING.value in statuses:
        if execution.status != E.WAITING_APPROVAL.value:
            move_execution(session, execution, E.WAITING_APPROVAL, actor=ENGINE, reason="waiting for approval")
    elif T.PENDING.value in statuses:
        _end(session, execution, steps, E.FAILED, "steps left that can never start")
    else:
        move_execution(session, execution, E.SUCCEEDED, actor=ENGINE)
    return execution.status


def abandon(session: Session, execution_id: str, reason: str) -> bool:
    """The execution's runs kept failing (the queue gave up on its trigger): it ends `failed` with the
    reason, its running steps failed, the rest skipped or cancelled, its open approvals cancelled."""

    execution = _lock(session, execution_id)
    if _final(execution):
        return False
    steps = execution_steps(session, execution_id)
    for step in steps:
        if step.status == T.RUNNING.value:
            step.error = reason[:4000]
            move_step(session, step, T.FAILED, actor=ENGINE, reason=reason)
    _end(session, execution, steps, E.FAILED, reason)
    approvals.cancel_for_execution(
        session, tenant_id=execution.tenant_id, workflow_execution_id=execution.id, actor=ENGINE.id
    )
    return True


def run(
    engine: Engine,
    execution_id: str,
    *,
    call: Caller,
    run_id: str | None = None,
    max_parallel: int = 4,
    exchange_for: ExchangeFor = lambda _queue: "",
    outbox_transport: bool = False,
) -> str:
    """Run the execution as far as it can go now; returns its status when this run ends. `outbox_transport`:
    a publish step's message is delivered in the outbox (BATCH_TRANSPORT=outbox), not left to the relay."""
    with transaction(engine) as session:
        go_on, to_send = _begin(session, execution_id, run_id)
    if not go_on:
        with transaction(engine) as session:
            return _lock(session, execution_id).status
    in_flight: dict[Future[CallResult], ServiceCall] = {}
    with ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="workflow-step") as pool:
        while True:
            for pending_call in to_send:
                in_flight[pool.submit(call, pending_call)] = pending_call
            to_send = []
            progressed = False
            if go_on:
                with transaction(engine) as session:
                    go_on, progressed, to_send = _claim(
                        session, execution_id, max_parallel - len(in_flight), exchange_for, outbox_transport
                    )
            if to_send:
                continue
            if not in_flight:
                if go_on and progressed:
                    continue  # an approval decided or a message written: look for what became ready
                break
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in finished:
                done_call = in_flight.pop(future)
                result = future.result()
                with transaction(engine) as session:
                    _record(session, done_call, result)
            go_on = True  # a result may have made steps ready (or ended the execution: _claim says)
    with transaction(engine) as session:
        return _settle(session, execution_id)
