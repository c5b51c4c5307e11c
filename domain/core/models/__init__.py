"""The store: every table of the five flows, with their invariants as database constraints.

Every table that holds tenant data carries `tenant_id`; rows that belong to a tenant-scoped parent
reference it through a composite foreign key `(tenant_id, parent_id)`, so a row can never point at
another tenant's parent, whatever the code does.

One module per flow's tables over `base`; this package re-exports them all, so callers import
`domain.core.models` whatever the table.
"""

from domain.core.models.base import (
    NAMING_CONVENTION as NAMING_CONVENTION,
    Base as Base,
    BigId as BigId,
    JSONType as JSONType,
    UTCDateTime as UTCDateTime,
    created_column as created_column,
    id_column as id_column,
    new_id as new_id,
    one_of as one_of,
    status_check as status_check,
    utcnow as utcnow,
)
from domain.core.models.batch import (
    OutboundMessage as OutboundMessage,
    OutboundMessageStatus as OutboundMessageStatus,
)
from domain.core.models.counters import FlowCounter as FlowCounter
from domain.core.models.guard import (
    StatusWriteOutsideLifecycle as StatusWriteOutsideLifecycle,
    allow_status_write as allow_status_write,
)
from domain.core.models.messages import (
    AuditLog as AuditLog,
    IdempotencyKey as IdempotencyKey,
    Notification as Notification,
    NotificationChannel as NotificationChannel,
    NotificationStatus as NotificationStatus,
    WebhookDelivery as WebhookDelivery,
)
from domain.core.models.phases import (
    LearningRecord as LearningRecord,
    PhaseAudit as PhaseAudit,
    PhaseEvent as PhaseEvent,
    PhaseEventSequence as PhaseEventSequence,
    PhaseEventType as PhaseEventType,
    PhaseMetric as PhaseMetric,
    PhaseOutcome as PhaseOutcome,
    PhaseStatus as PhaseStatus,
    ProofPacket as ProofPacket,
    ProofPacketStatus as ProofPacketStatus,
    SyncProgress as SyncProgress,
)
from domain.core.models.queue import (
    QUEUE_LIVE_STATES as QUEUE_LIVE_STATES,
    QueueState as QueueState,
    TriggerQueue as TriggerQueue,
)
from domain.core.models.release import (
    BuildStatus as BuildStatus,
    ReleaseBuild as ReleaseBuild,
    RepoBuild as RepoBuild,
)
from domain.core.models.tenancy import (
    DEPLOYMENT_ACTIONS as DEPLOYMENT_ACTIONS,
    AutomationVersion as AutomationVersion,
    Deployment as Deployment,
    DeploymentStatus as DeploymentStatus,
    Project as Project,
    ProjectCollaborator as ProjectCollaborator,
    Task as Task,
    TaskStatus as TaskStatus,
    Tenant as Tenant,
    TenantMembership as TenantMembership,
    User as User,
    WorkflowBinding as WorkflowBinding,
)
from domain.core.models.workflows import (
    APPROVAL_ON_REJECT as APPROVAL_ON_REJECT,
    APPROVAL_OUTCOMES as APPROVAL_OUTCOMES,
    STEP_KINDS as STEP_KINDS,
    ApprovalStatus as ApprovalStatus,
    CallbackStatus as CallbackStatus,
    ConsumedEvent as ConsumedEvent,
    ExecutionStatus as ExecutionStatus,
    HitlApproval as HitlApproval,
    HitlApprovalCallback as HitlApprovalCallback,
    StepStatus as StepStatus,
    Workflow as Workflow,
    WorkflowDefinition as WorkflowDefinition,
    WorkflowExecution as WorkflowExecution,
    WorkflowExecutionStep as WorkflowExecutionStep,
    WorkflowStep as WorkflowStep,
)
from domain.core.statuses import BindingStatus as BindingStatus
