"""Every status of automation versions, projects and workflow bindings, and every allowed move, as data.

The models (check constraints, defaults) and the lifecycle (the moves) both import this module, so
neither imports the other to learn a status.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Status(enum.StrEnum):
    DRAFT = "Draft"
    BUILD_IN_PROGRESS = "Build in Progress"
    QA_AND_TESTING = "QA & Testing"
    READY_TO_LAUNCH = "Ready to Launch"
    LIVE = "Live"
    PAUSED = "Paused"
    ARCHIVED = "Archived"
    # A build or deployment that failed and needs a person; it leaves by a rebuild or by archiving.
    ERROR = "Error"


S = Status

AUTOMATION_VERSION_TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    S.DRAFT: frozenset({S.BUILD_IN_PROGRESS, S.ARCHIVED}),
    S.BUILD_IN_PROGRESS: frozenset({S.QA_AND_TESTING, S.ERROR, S.DRAFT}),
    S.QA_AND_TESTING: frozenset({S.READY_TO_LAUNCH, S.BUILD_IN_PROGRESS, S.DRAFT, S.ARCHIVED}),
    S.READY_TO_LAUNCH: frozenset({S.LIVE, S.QA_AND_TESTING, S.ERROR, S.ARCHIVED}),
    S.LIVE: frozenset({S.PAUSED, S.ARCHIVED}),
    S.PAUSED: frozenset({S.LIVE, S.ARCHIVED}),
    S.ERROR: frozenset({S.DRAFT, S.BUILD_IN_PROGRESS, S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}

# A project's status follows its most advanced version, so it may skip steps a version cannot.
PROJECT_TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    S.DRAFT: frozenset({S.BUILD_IN_PROGRESS, S.QA_AND_TESTING, S.ARCHIVED}),
    S.BUILD_IN_PROGRESS: frozenset({S.QA_AND_TESTING, S.ERROR, S.DRAFT}),
    S.QA_AND_TESTING: frozenset({S.READY_TO_LAUNCH, S.LIVE, S.BUILD_IN_PROGRESS, S.ARCHIVED}),
    S.READY_TO_LAUNCH: frozenset({S.LIVE, S.QA_AND_TESTING, S.ARCHIVED}),
    S.LIVE: frozenset({S.PAUSED, S.ARCHIVED}),
    S.PAUSED: frozenset({S.LIVE, S.ARCHIVED}),
    S.ERROR: frozenset({S.DRAFT, S.BUILD_IN_PROGRESS, S.QA_AND_TESTING, S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}

# Archived -> Live only by a rollback (domain.deploy.rollback, action "rollback"): a status request
# never revives an archived version.
ROLLBACK_TRANSITIONS: Mapping[Status, frozenset[Status]] = {S.ARCHIVED: frozenset({S.LIVE})}
ROLLBACK_ACTION = "rollback"

INITIAL_STATUS = S.DRAFT


# -- workflow bindings ---------------------------------------------------------------------------------


class BindingStatus(enum.StrEnum):
    PENDING = "pending"  # no workflow on the platform yet
    ACTIVE = "active"  # the workflow exists and is the one to run
    INACTIVE = "inactive"  # superseded (its version archived); the platform workflow is deactivated
    ERROR = "error"  # the build could not create or bind the workflow


B = BindingStatus

WORKFLOW_BINDING_TRANSITIONS: Mapping[BindingStatus, frozenset[BindingStatus]] = {
    B.PENDING: frozenset({B.ACTIVE, B.ERROR}),
    B.ERROR: frozenset({B.PENDING}),
    B.ACTIVE: frozenset({B.INACTIVE}),
    B.INACTIVE: frozenset({B.ACTIVE}),
}

INITIAL_BINDING_STATUS = B.PENDING
