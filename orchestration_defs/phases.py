"""The seven-phase pipeline's worker: `phase_worker` runs live long and take the phase triggers as they
are committed. The phase sensor (sensors/phases.py) keeps PHASE_WORKERS of them live while triggers are
due or were queued lately; a worker claims due triggers (launched with its run id in the claim's
statement) to keep up to twice PHASE_ROW_WORKERS in hand, claiming again once half of them are done
(at most PHASE_BATCH_SIZE a claim), so its row threads never wait for a batch's slowest trigger; it
processes each in two steps of its own (domain/phases/phases.py `begin`, then `complete`, which acks the
trigger with what it records: one statement each on PostgreSQL, `step_store`), calling the integrations
backend and the payment API between them with no transaction open, then waits for the next: woken by
the enqueue's NOTIFY on PostgreSQL, polling on SQLite (PHASE_WORKER_POLL_S; also the fallback on
PostgreSQL), domain/queue/listening.py. It ends after PHASE_WORKER_IDLE_S with nothing to claim and
nothing queued meanwhile, PHASE_WORKER_MAX_S after it started, or after PHASE_RUN_MAX_TRIGGERS triggers,
so a new worker (with the code deployed since) takes over; shortly before, it tags itself retiring
(half its triggers taken, or RETIRE_LEAD_S before its lifetime ends) and the sensor starts that successor.

Each trigger has its own outcome: a failed one goes back to the queue with the queue's backoff (or is
dead, audited and alerted), the others finish. The triggers finished are one event in the run's log
(trigger, phase, user, outcome) once a second, or as each finishes at a low rate, and the run is
tagged with the phases, the count and one tag per user (`wrk/user.<user id>`), so a user's runs are
found in the Dagster UI by that tag.

A worker that dies (killed, its machine lost) leaves its unfinished triggers launched; run monitoring
fails its run and the sensor's reconciliation (orchestration_defs/trigger_runs.py reconcile_launched)
sends them back to the queue with backoff; so does a run that succeeded without finishing them (no
completed audit row: domain/queue/outcomes.py). A step delivered again (EXECUTOR=celery: its worker was
lost) first carries on with every trigger its run still holds. While the store cannot be reached the
worker waits (and ends at its lifetime); a trigger whose outcome could not be recorded fails the run,
so reconciliation sends it back once the store is there again.
"""

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from domain.core.errors import PermanentError
from domain.core.models import QueueState, utcnow
from domain.core.settings import get_settings
from domain.core.store import autocommit, is_postgres, read_transaction, transaction
from domain.phases import phases, phases_proof, syncs
from domain.phases.phases_money import Route
from domain.queue import queue
from domain.queue.listening import Listener
from domain.queue.triggers import PhaseTrigger
from orchestration_defs.executors import executor_for
from orchestration_defs.tags import TAG_FLOW, TAG_KIND
from orchestration_defs.trigger_runs import LEASE_SECONDS, dead
from resources.dagster_resources import DatabaseResource, IntegrationsResource, PaymentsResource
from resources.integrations import IntegrationsClient
from resources.payments import PaymentsClient

JOB = "phase_worker"
TAG_COUNT = "wrk/phase_count"
TAG_PHASES = "wrk/phases"
TAG_PHASE = "wrk/phase"  # one phase; a run that took triggers of several later: their list, as wrk/phases
TAG_PHASE_TENANTS = "wrk/tenants"
USER_TAG_PREFIX = "wrk/user."
MAX_TAG_VALUE = 4096
MAX_USER_TAGS = 1000  # PHASE_RUN_MAX_TRIGGERS is at most this: every user of a worker is tagged
REPORT_S = 1.0  # a busy worker writes its finished triggers to the run's log and tags this often
# A worker past half its PHASE_RUN_MAX_TRIGGERS, or this close to its PHASE_WORKER_MAX_S, tags itself
# retiring: the sensor no longer counts it and starts its successor, which is working when it ends (a
# launch takes a sensor tick, the run queue's dequeue and a second or more: under a burst, a worker's
# second half of its triggers takes longer than that).
RETIRE_LEAD_S = 10.0
TAG_RETIRING = "wrk/phase_worker_retiring"


def user_tag(user_id: str) -> str:
    """The tag key naming one user (Dagster tag keys: [A-Za-z0-9_.-], at most 63 after the slash); an id
    that had to be changed to fit gets a short hash, so two users never share a key."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user_id)
    if safe != user_id or len(safe) > 50:
        safe = f"{safe[:40]}-{hashlib.sha1(user_id.encode()).hexdigest()[:8]}"
    return USER_TAG_PREFIX + safe


Tagged = tuple[int, str | None, str]  # what a run's tags say of one trigger: phase, tenant, user


PARENT_RUN_TAG = "dagster/parent_run_id"  # what Dagster tags a re-execution with
# A worker's tags before it takes a trigger (run_tags adds its count of 0).
NO_TRIGGERS_TAGS = {TAG_PHASES: "", TAG_PHASE: "", TAG_PHASE_TENANTS: "", TAG_RETIRING: "false"}


def run_tags() -> dict[str, str]:
    """A new worker's tags: its kind; the phases, count and users follow as it takes triggers (retag)."""
    return {TAG_KIND: phases.KIND, TAG_COUNT: "0"}


def _tagged(rows: Sequence[phases.PhaseRow]) -> list[Tagged]:
    return [(r.trigger.phase, r.trigger.tenant_id, r.trigger.user_id) for r in rows]


def _tags(triggers: Sequence[Tagged]) -> dict[str, str]:
    """A run's tags for its (phase, tenant, user) triggers."""
    numbers = sorted({phase for phase, _, _ in triggers})
    tenants = sorted({tenant for _, tenant, _ in triggers if tenant})
    phase_list = ",".join(map(str, numbers))
    tags = {TAG_KIND: phases.KIND, TAG_COUNT: str(len(triggers)), TAG_PHASES: phase_list}
    if len(numbers) == 1:
        tags[TAG_PHASE] = phase_list
    # Their tenants, but not as wrk/tenant_id: a phase worker is limited per kind (and by
    # PHASE_WORKERS), not per tenant, or one tenant's builds holding its runs at the tenant limit
    # would hold every tenant's phases queued behind its batch (orchestration_defs/concurrency.py).
    tags[TAG_PHASE_TENANTS] = ",".join(tenants)[:MAX_TAG_VALUE]
    for user in sorted({user for _, _, user in triggers})[:MAX_USER_TAGS]:
        tags[user_tag(user)] = user
    return tags


def retag(taken: Sequence[Tagged], more: Sequence[Tagged]) -> dict[str, str]:
    """The tags a run adds when it took `more` triggers (all it took: `taken`): the new count, phases and
    tenants, and the new users' tags (Dagster adds tags; it never removes one). A run that now holds
    several phases has them all in wrk/phase too, so no filter on its first phase finds it wrongly."""
    tags = {k: v for k, v in _tags(taken).items() if not k.startswith(USER_TAG_PREFIX)}
    tags.setdefault(TAG_PHASE, tags[TAG_PHASES])
    tags.update({k: v for k, v in _tags(more).items() if k.startswith(USER_TAG_PREFIX)})
    return tags


# -- one trigger ---------------------------------------------------------------------------------------


class Outside:
    """The clients a phase calls, and where proof packets go."""

    def __init__(self, integrations: IntegrationsClient, payments: PaymentsClient, packet_dir: Path) -> None:
        self.integrations, self.payments, self.packet_dir = integrations, payments, packet_dir


def act(engine: Any, row: phases.PhaseRow, plan: phases.Plan, outside: Outside) -> dict[str, Any]:
    """The phase's action on the outside world; returns what `complete` records."""
    t = row.trigger
    seller = t.input.get("seller_id")
    who = {"tenant_id": t.tenant_id, "user_id": t.user_id, "sync_id": t.sync_id, "seller_id": seller}
    key = f"phase{t.phase}:trigger:{row.trigger_id}"
    api = outside.integrations
    if t.phase == 1:
        return {"sync_job": api.start_sync(who, key).get("id")}
    if t.phase == 2:
        return {"detection_job": api.start_detection(who, key).get("id")}
    if t.phase == 3:
        return {"matching_job": api.start_evidence_matching(who, key).get("id")}
    if t.phase == 4:
        routed: dict[str, list[str]] = {r.value: [] for r in Route}
        for match in plan.routes:
            if match["route"] == Route.AUTO_SUBMIT.value:
                claim = {k: match[k] for k in ("claim_id", "amount", "currency", "evidence_ids", "confidence")}
                api.submit_claim(who, claim, key=f"submit:{t.tenant_id}:{t.user_id}:{match['claim_id']}")
            routed[match["route"]].append(match["claim_id"])
        return routed
    if t.phase == 5:
        claim = {k: t.input[k] for k in ("claim_id", "amount", "currency")}
        return {"monitoring_job": api.start_payout_monitoring(who, claim, key).get("id")}
    if t.phase == 6:
        assert plan.learning_record_id is not None
        record = {
            "learning_record_id": plan.learning_record_id,
            "sync_id": t.sync_id,
            "claim_id": t.input["claim_id"],
            "reason_code": t.input["reason_code"],
        }
        job = api.trigger_learning_pipeline(
            tenant_id=t.tenant_id, user_id=t.user_id, record=record, key=f"learning:{plan.learning_record_id}"
        )
        return {"learning_record_id": plan.learning_record_id, "pipeline_job_id": job.get("id")}
    return _payout(engine, row, plan, outside)


def _payout(engine: Any, row: phases.PhaseRow, plan: phases.Plan, outside: Outside) -> dict[str, Any]:
    """Phase 7: charge the fee (the packet's own idempotency key), record the charge, write the packet."""
    assert plan.packet_id is not None and plan.fee_idempotency_key is not None and plan.fee_minor is not None
    if plan.packet_status == "ready":
        return {"already_ready": True}
    with read_transaction(engine) as session:
        document = syncs.packet_document(session, plan.packet_id)
    if document["fee"]["payment_intent_id"] is None and plan.fee_minor > 0:
        intent = outside.payments.create_payment_intent(
            amount_minor=plan.fee_minor,
            currency=document["fee"]["currency"],
            idempotency_key=plan.fee_idempotency_key,
            description=f"Platform fee (20%) on payout {document['payout']['payout_id']}",
            metadata={"proof_packet_id": plan.packet_id, "claim_id": document["claim"]["claim_id"]},
        )
        with transaction(engine) as session:
            phases.record_charge(session, plan.packet_id, intent.id)
        document["fee"]["payment_intent_id"] = intent.id
    written = phases_proof.write(outside.packet_dir, row.trigger.tenant_id, document)
    return {
        "payment_intent_id": document["fee"]["payment_intent_id"],
        "json_sha256": written.json_sha256,
        "pdf_path": str(written.pdf_path),
        "json_path": str(written.json_path),
    }


def step_store(engine: Any, one_statement: bool) -> AbstractContextManager[Any]:
    """Where a phase step writes: an autocommit connection on PostgreSQL when the step is one statement
    (its own transaction, one round trip), else a Session's transaction."""
    return autocommit(engine) if one_statement and is_postgres(engine) else transaction(engine)


def process_row(engine: Any, row: phases.PhaseRow, run_id: str, outside: Outside, log: Any) -> str:
    """One trigger, start to end: "completed", "failed" (back in the queue), "dead", "stale" (this run no
    longer holds it) or "unrecorded" (its failure could not be written: the run must fail)."""
    started_at, clock = utcnow(), time.perf_counter()
    try:
        with step_store(engine, row.trigger.phase in phases.ONE_STATEMENT_BEGIN) as store:
            plan = phases.begin(store, row)
        result = act(engine, row, plan, outside)
        with step_store(engine, row.trigger.phase in phases.ONE_STATEMENT_COMPLETE) as store:
            phases.complete(
                store,
                row,
                plan,
                run_id=run_id,
                started_at=started_at,
                duration_s=time.perf_counter() - clock,
                result=result,
            )
        return "completed"
    except queue.StaleClaim:
        log.warning(f"phase trigger {row.trigger_id}: no longer held by this run; left to its new claim")
        return "stale"
    except Exception as exc:  # each trigger has its own outcome: record this one, go on with the others
        error = f"{type(exc).__name__}: {exc}"
        log.warning(f"phase trigger {row.trigger_id} (phase {row.trigger.phase}) failed: {error}")
        try:
            with transaction(engine) as session:
                state = phases.fail(
                    session,
                    row,
                    run_id=run_id,
                    error=error,
                    retryable=not isinstance(exc, PermanentError),
                    started_at=started_at,
                    duration_s=time.perf_counter() - clock,
                )
                if state is QueueState.DEAD:
                    dead(session, row.trigger_id, phases.KIND, row.trigger.tenant_id, error, alert=True, run_id=run_id)
        except Exception as record_error:
            log.error(f"phase trigger {row.trigger_id}: its failure could not be recorded: {record_error!r}")
            return "unrecorded"
        if state is None:
            return "stale"
        return "dead" if state is QueueState.DEAD else "failed"


def claim_more(engine: Any, limit: int, run_id: str) -> list[phases.PhaseRow]:
    """Up to `limit` due phase triggers for this run: claimed and launched with its id in one
    transaction, so a run that dies leaves them launched, for reconciliation."""
    with transaction(engine) as session:
        claimed = queue.claim(session, [phases.KIND], limit, LEASE_SECONDS, f"{JOB}:{run_id}", run_id=run_id)
    return _phase_rows(claimed)


def _still_running(context: dg.OpExecutionContext) -> bool:
    """A run being cancelled (or otherwise ending) takes no more triggers: those it holds would be
    cancelled with it (orchestration_defs/trigger_runs.py reconcile_launched)."""
    run = context.instance.get_run_by_id(context.run_id)
    return run is None or run.status == dg.DagsterRunStatus.STARTED


def _phase_rows(claimed: Sequence[queue.Claimed]) -> list[phases.PhaseRow]:
    return [phases.PhaseRow(c.id, c.claim_token, c.attempts, PhaseTrigger.model_validate(c.payload)) for c in claimed]


def held_rows(engine: Any, run_id: str) -> list[phases.PhaseRow]:
    """Every trigger this run holds (launched with its id, not finished): a step delivered again (a
    Celery worker lost mid-step) or retried carries on with them first."""
    with read_transaction(engine) as session:
        return _phase_rows(queue.held_by_run(session, phases.KIND, run_id))


def queued_lately(session: Any) -> bool:
    """Whether a phase trigger was queued in the last PHASE_WORKER_IDLE_S: while one was, the sensor keeps
    PHASE_WORKERS workers live and an idle worker does not end."""
    since = utcnow() - timedelta(seconds=get_settings().phase_worker_idle_s)
    return queue.queued_since(session, phases.KIND, since)


def _lower_priority(nice: int) -> None:
    """A row thread's nice value (Linux: per thread), so the API's answers come first on a shared machine.
    Only the threads the worker starts: the op's own thread may be the caller's (execute_in_process)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)


class Worker:
    """One phase worker run's loop: claim, hand each trigger to a row thread, claim again while the threads
    still have work queued, wait; until it is time to end. The threads never wait for a batch's slowest
    trigger or for the run's log: up to twice PHASE_ROW_WORKERS triggers are in hand, a claim tops them up
    once half are done, and the finished triggers' lines and users go to Dagster once a second (at once
    when none is in hand, as at a low rate)."""

    def __init__(self, context: dg.OpExecutionContext, engine: Any, outside: Outside) -> None:
        self.context, self.engine, self.outside = context, engine, outside
        self.settings = get_settings()
        self.taken: list[Tagged] = []
        self.outcomes: list[str] = []
        self.store_errors = 0
        self.in_hand: dict[Future[str], phases.PhaseRow] = {}
        self.finished: list[str] = []  # lines of finished triggers not yet in the run's log
        self.untagged: list[Tagged] = []  # taken triggers whose users are not yet in the run's tags
        self.reported = self.started = time.monotonic()  # run() sets the start again as it starts
        self.retiring = False

    def run(self, carried: list[phases.PhaseRow]) -> None:
        settings, clock = self.settings, time.monotonic
        rows = settings.phase_row_workers
        started = last_work = self.started = clock()
        checked = started - 1.0
        with (
            Listener(self.engine, [phases.KIND]) as listener,
            ThreadPoolExecutor(rows, initializer=_lower_priority, initargs=(settings.phase_worker_nice,)) as pool,
        ):
            listener.listen()  # before the first claim: a trigger committed after it wakes this worker
            try:
                batch: list[phases.PhaseRow] | None = carried
                while True:
                    if batch:
                        self._hand(pool, batch)
                        last_work = clock()
                    self._reap()
                    if "unrecorded" in self.outcomes:
                        return  # the run fails; reconciliation sends what it holds back (see the module)
                    left = settings.phase_run_max_triggers - len(self.taken)
                    now = clock()
                    if left <= 0 or now - started >= settings.phase_worker_max_s:
                        return
                    if now - checked >= 1.0:  # a Dagster storage read: once a second, not once a claim
                        if not _still_running(self.context):
                            return
                        checked = now
                    if len(self.in_hand) > rows:  # every thread has work and more queued: claim later
                        wait(self.in_hand, timeout=settings.phase_worker_poll_s, return_when=FIRST_COMPLETED)
                        batch = []
                        continue
                    batch = self._claim(min(settings.phase_batch_size, 2 * rows - len(self.in_hand), left))
                    if batch is None:  # the store cannot be reached: wait, then try again
                        listener.wait(min(settings.phase_worker_poll_s * 2**self.store_errors, 10.0))
                        continue
                    if batch:
                        continue
                    if self.in_hand:
                        last_work = now
                    elif now - last_work >= settings.phase_worker_idle_s:
                        if not self._queued_lately():
                            return
                        last_work = now  # the other workers took what was queued: stay, as the sensor wants
                    listener.wait(settings.phase_worker_poll_s)
            finally:  # the triggers in hand finish (their outcomes recorded) before the run ends
                wait(self.in_hand)
                self._reap()
                self._report()

    def _hand(self, pool: ThreadPoolExecutor, batch: list[phases.PhaseRow]) -> None:
        run_id, log = self.context.run_id, self.context.log
        for row in batch:
            self.in_hand[pool.submit(process_row, self.engine, row, run_id, self.outside, log)] = row
        more = _tagged(batch)
        self.taken += more
        self.untagged += more

    def _reap(self) -> None:
        """The outcomes of the triggers finished since; the run's log and tags once a second, or now when
        no trigger is in hand."""
        for future in [f for f in self.in_hand if f.done()]:
            row, outcome = self.in_hand.pop(future), future.result()
            self.outcomes.append(outcome)
            self.finished.append(
                f"trigger {row.trigger_id}: phase {row.trigger.phase}, user {row.trigger.user_id}, {outcome}"
            )
        if self.finished and (not self.in_hand or time.monotonic() - self.reported >= REPORT_S):
            self._report()

    def _report(self) -> None:
        """One event for the triggers finished since the last (after their commits: off the triggers' path),
        and the run's tags for the users taken since, so the UI finds the run by them (and, once, the
        retiring tag)."""
        self.reported = now = time.monotonic()
        settings = self.settings
        ending = (
            len(self.taken) >= settings.phase_run_max_triggers / 2
            or settings.phase_worker_max_s - (now - self.started) <= RETIRE_LEAD_S
        )
        if ending and not self.retiring:
            self.retiring = True
            self._tag({TAG_RETIRING: "true"})
        if self.finished:
            lines, self.finished = self.finished, []
            self.context.log.info(
                f"{len(lines)} phase trigger(s), {len(self.outcomes)} in this run\n" + "\n".join(lines)
            )
        if self.untagged:
            more, self.untagged = self.untagged, []
            self._tag(retag(self.taken, more))

    def _tag(self, tags: dict[str, str]) -> None:
        try:  # the tags help the UI find the run and the sensor plan: a failed write must not fail the triggers
            self.context.instance.add_run_tags(self.context.run_id, tags)
        except Exception as exc:
            self.context.log.warning(f"could not tag the run ({', '.join(sorted(tags)[:3])} ...): {exc!r}")

    def disown_parent(self) -> None:
        """A worker re-executed from the UI starts with its parent's tags (Dagster copies them): the
        parent's count, phases, tenants and retiring mark are set back to a new worker's, so the run shows
        what it took itself and the sensor counts it as live. The parent's user tags stay (Dagster adds
        tags, never removes one); the run's parent link shows where they come from."""
        run = self.context.run
        parent_id = run.tags.get(PARENT_RUN_TAG)
        if not parent_id:
            return
        parent = self.context.instance.get_run_by_id(parent_id)
        copied = parent.tags if parent is not None else run.tags  # a parent deleted since: all it could have
        reset = {
            key: value
            for key, value in {**NO_TRIGGERS_TAGS, **run_tags()}.items()
            if key in copied and run.tags.get(key) == copied[key] != value
        }
        if reset:
            self._tag(reset)

    def _queued_lately(self) -> bool:
        """`queued_lately` (the sensor's rule for keeping PHASE_WORKERS live): a worker with nothing to do
        stays while triggers keep coming, even if the other workers take them all; False when the store
        cannot say."""
        try:
            with read_transaction(self.engine) as session:
                return queued_lately(session)
        except Exception:
            return False

    def _claim(self, limit: int) -> list[phases.PhaseRow] | None:
        try:
            batch = claim_more(self.engine, limit, self.context.run_id)
        except Exception as exc:  # a store outage: the worker waits for it, saying so once
            if self.store_errors == 0:
                self.context.log.warning(f"cannot claim phase triggers, waiting for the store: {exc!r}")
            self.store_errors = min(self.store_errors + 1, 6)
            return None
        if self.store_errors:
            self.context.log.info("the store answers again")
            self.store_errors = 0
        return batch


@dg.op(description="Take phase triggers as they are committed, each in transactions of its own; one outcome each.")
def work_phase_triggers(
    context: dg.OpExecutionContext,
    database: DatabaseResource,
    integrations: IntegrationsResource,
    payments: PaymentsResource,
) -> dict[str, int]:
    engine = database.engine
    outside = Outside(integrations.client, payments.client, Path(get_settings().proof_packet_dir))
    worker = Worker(context, engine, outside)
    worker.disown_parent()
    carried = held_rows(engine, context.run_id)
    worker.run(carried)
    counts = {name: worker.outcomes.count(name) for name in ("completed", "failed", "dead", "stale", "unrecorded")}
    counts["carried"] = len(carried)
    context.add_output_metadata(counts)
    if counts["unrecorded"]:
        # The run fails; reconciliation sends the triggers still launched back to the queue with backoff.
        raise dg.Failure(description=f"{counts['unrecorded']} phase trigger(s) failed and could not be recorded")
    return counts


@dg.job(
    name=JOB,
    description="Seven-phase pipeline: a long-lived worker taking phase triggers as they come, one outcome each.",
    tags={TAG_FLOW: "phase"},
    # one op: no second process to start; EXECUTOR=celery: on the `phases` queue
    executor_def=executor_for("phases", dg.in_process_executor),
)
def phase_worker() -> None:
    work_phase_triggers()
