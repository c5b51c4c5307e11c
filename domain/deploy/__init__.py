"""Flow 24 / 24B and rollback: the deploy saga, in one place that the API, the CLI and the
reconciliation job call.

A status change that touches the WRK Platform (deploy, resume, pause, rollback) goes:

1. **plan** (one transaction): route the request by the version's current status, check the
   preconditions and the client's concurrency hints, and record the intent as a `deployments` row
   (`requested`), claiming the Idempotency-Key. Nothing on the platform yet.
2. **activating** (one transaction), then the platform call, bounded by the request's deadline.
3. **commit** (one transaction): re-check under the project lock, make the version Live (previous
   Live archived) or Paused, audit, notify, and mark the row `committed` with the answer.
4. **converge**, before answering: the previous Live version's workflow off, then it and the
   version's own workflow checked against a fresh read of the store until they agree. Another
   request of the project may call the platform between our read and our call, or commit between
   our call and our check; whoever changes either checks again after, so a later commit wins on the
   platform too and, once every request has answered, the platform runs what the store says.
5. Any refusal or failure after step 2 **compensates**: the platform is put back to what the store
   wants, and the row ends `compensated` (or `failed` when the platform call itself failed). A
   compensation that cannot be done is alerted and the row stays `activating` with the reason in
   `error`, for reconciliation.

Past its deadline a request stops calling the platform and never commits: the row belongs to
reconciliation from `deadline_at` on (`reconcile`), which finishes the deploy when the platform did
what was asked and nothing moved meanwhile, and undoes it otherwise. Reconciliation then compares the
platform with the store both ways: every workflow of a Live version active, every other inactive.

Never two Live versions of a project (the partial unique index is the last word); commits of one
project are serialised by locking the project row. No platform call happens inside a transaction.

One module per step: `saga` (the request and what callers provide), `plan`, `run` (platform call,
commit, converge, compensate), `commit` (the store side, under the project's lock), `reconcile`. This
package exposes the flow's API.
"""

from domain.deploy.commit import (
    Committed as Committed,
    commit_live as commit_live,
    commit_pause as commit_pause,
    live_versions as live_versions,
)
from domain.deploy.plan import (
    change_status as change_status,
    rollback as rollback,
    rollback_target as rollback_target,
    route as route,
)
from domain.deploy.reconcile import (
    Reconciliation as Reconciliation,
    reconcile as reconcile,
)
from domain.deploy.run import (
    converge as converge,
    restore_platform as restore_platform,
    wanted_active as wanted_active,
)
from domain.deploy.saga import (
    DEPLOYMENT_TRANSITIONS as DEPLOYMENT_TRANSITIONS,
    OPEN as OPEN,
    RECONCILE_GRACE as RECONCILE_GRACE,
    DeadlineExceeded as DeadlineExceeded,
    DeployRefused as DeployRefused,
    Hints as Hints,
    Outcome as Outcome,
    Platform as Platform,
    Request as Request,
    Route as Route,
    Saga as Saga,
    check_hints as check_hints,
    render_version as render_version,
    request_hash as request_hash,
)
