"""The store: every table of the five flows, with their invariants as database constraints.

Every table that holds tenant data carries `tenant_id`; rows that belong to a tenant-scoped parent
reference it through a composite foreign key `(tenant_id, parent_id)`, so a row can never point at
another tenant's parent, whatever the code does.

One module per flow's tables over `base`; this package re-exports them all, so callers import
`domain.core.models` whatever the table.
"""

from domain.core.models.base import (
    NAMING_CONVENTION as NAMING_CONVENTION,
)
from domain.core.models.base import (
    Base as Base,
)
from domain.core.models.base import (
    BigId as BigId,
)
from domain.core.models.base import (
    JSONType as JSONType,
)
from domain.core.models.base import (
    UTCDateTime as UTCDateTime,
)
from domain.core.models.base import (
    created_column as created_column,
)
from domain.core.models.base import (
    id_column as id_column,
)
from domain.core.models.base import (
    new_id as new_id,
)
from domain.core.models.base import (
    one_of as one_of,
)
from domain.core.models.base import (
    status_check as status_check,
)
from domain.core.models.base import (
    utcnow as utcnow,
)
from domain.core.models.batch import (
    OutboundMessage as OutboundMessage,
)
from domain.core.models.batch import (
    OutboundMessageStatus as OutboundMessageStatus,
)
from domain.core.models.guard import (
    StatusWriteOutsideLifecycle as StatusWriteOutsideLifecycle,
)
from domain.core.models.guard import (
    allow_status_write as allow_status_write,
)
from domain.core.models.messages import (
    AuditLog as AuditLog,
)
from domain.core.models.messages import (
    IdempotencyKey as IdempotencyKey,
)
from domain.core.models.messages import (
    Notification as Notification,
)
from domain.core.models.messages import (
    NotificationChannel as NotificationChannel,
)
from domain.core.models.messages import (
    NotificationStatus as NotificationStatus,
)
from domain.core.models.messages import (
    WebhookDelivery as WebhookDelivery,
)
from domain.core.models.phases import (
    LearningRecord as LearningRecord,
)
from domain.core.models.phases import (
    PhaseAudit as PhaseAudit,
)
from domain.core.models.phases import (
    PhaseEvent as PhaseEvent,
)
from domain.core.models.phases import (
    PhaseEventSequence as PhaseEventSequence,
)
from domain.core.models.phases import (
    PhaseEventType as PhaseEventType,
)
from domain.core.models.phases import (
    PhaseMetric as PhaseMetric,
)
from domain.core.models.phases import (
    PhaseOutcome as PhaseOutcome,
)
from domain.core.models.phases import (
    PhaseStatus as PhaseStatus,
)
from domain.core.models.phases import (
    ProofPacket as ProofPacket,
)
from domain.core.models.phases import (
    ProofPacketStatus as ProofPacketStatus,
)
from domain.core.models.phases import (
    SyncProgress as SyncProgress,
)
from domain.core.models.queue import (
    QUEUE_LIVE_STATES as QUEUE_LIVE_STATES,
)
from domain.core.models.queue import (
    QueueState as QueueState,
)
from domain.core.models.queue import (
    TriggerQueue as TriggerQueue,
)
from domain.core.models.release import (
    BuildStatus as BuildStatus,
)
from domain.core.models.release import (
    ReleaseBuild as ReleaseBuild,
)
from domain.core.models.release import (
    RepoBuild as RepoBuild,
)
from domain.core.models.tenancy import (
    DEPLOYMENT_ACTIONS as DEPLOYMENT_ACTIONS,
)
from domain.core.models.tenancy import (
    AutomationVersion as AutomationVersion,
)
from domain.core.models.tenancy import (
    Deployment as Deployment,
)
from domain.core.models.tenancy import (
    DeploymentStatus as DeploymentStatus,
)
from domain.core.models.tenancy import (
    Project as Project,
)
from domain.core.models.tenancy import (
    ProjectCollaborator as ProjectCollaborator,
)
from domain.core.models.tenancy import (
    Task as Task,
)
from domain.core.models.tenancy import (
    TaskStatus as TaskStatus,
)
from domain.core.models.tenancy import (
    Tenant as Tenant,
)
from domain.core.models.tenancy import (
    TenantMembership as TenantMembership,
)
from domain.core.models.tenancy import (
    User as User,
)
from domain.core.models.tenancy import (
    WorkflowBinding as WorkflowBinding,
)
from domain.core.models.workflows import (
    APPROVAL_ON_REJECT as APPROVAL_ON_REJECT,
)
from domain.core.models.workflows import (
    APPROVAL_OUTCOMES as APPROVAL_OUTCOMES,
)
from domain.core.models.workflows import (
    STEP_KINDS as STEP_KINDS,
)
from domain.core.models.workflows import (
    ApprovalStatus as ApprovalStatus,
)
from domain.core.models.workflows import (
    CallbackStatus as CallbackStatus,
)
from domain.core.models.workflows import (
    ConsumedEvent as ConsumedEvent,
)
from domain.core.models.workflows import (
    ExecutionStatus as ExecutionStatus,
)
from domain.core.models.workflows import (
    HitlApproval as HitlApproval,
)
from domain.core.models.workflows import (
    HitlApprovalCallback as HitlApprovalCallback,
)
from domain.core.models.workflows import (
    StepStatus as StepStatus,
)
from domain.core.models.workflows import (
    Workflow as Workflow,
)
from domain.core.models.workflows import (
    WorkflowDefinition as WorkflowDefinition,
)
from domain.core.models.workflows import (
    WorkflowExecution as WorkflowExecution,
)
from domain.core.models.workflows import (
    WorkflowExecutionStep as WorkflowExecutionStep,
)
from domain.core.models.workflows import (
    WorkflowStep as WorkflowStep,
)
from domain.core.statuses import BindingStatus as BindingStatus
