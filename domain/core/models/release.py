"""Release builds and their per-repository builds."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from domain.core.models.base import (
    Base,
    created_column,
    id_column,
    status_check,
    utcnow,
)


class BuildStatus(enum.StrEnum):
    """Release builds and their per-repository builds."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # not built because a dependency failed


# ---------------------------------------------------------------------------------------------------
# Release builds (platform-wide: they belong to no tenant)


class ReleaseBuild(Base):
    __tablename__ = "release_builds"
    __table_args__ = (status_check("status", list(BuildStatus)),)
    id: Mapped[str] = id_column()
    tag: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    prerelease: Mapped[bool] = mapped_column(Boolean, default=False)
    repositories: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16), default=BuildStatus.PENDING.value)
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    github_release_id: Mapped[str | None] = mapped_column(String(64))
    github_release_url: Mapped[str | None] = mapped_column(String(1000))
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RepoBuild(Base):
    __tablename__ = "repo_builds"
    __table_args__ = (
        UniqueConstraint("release_build_id", "repository"),
        status_check("status", list(BuildStatus)),
    )
    id: Mapped[str] = id_column()
    release_build_id: Mapped[str] = mapped_column(ForeignKey("release_builds.id", ondelete="CASCADE"))
    repository: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=BuildStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    github_run_id: Mapped[str | None] = mapped_column(String(64))
    github_run_url: Mapped[str | None] = mapped_column(String(1000))
    conclusion: Mapped[str | None] = mapped_column(String(32))
    artifacts: Mapped[list[Any]] = mapped_column(default=list)
    checksums: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
