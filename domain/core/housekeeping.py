"""Pruning what is finished and old: idempotency keys, webhook deliveries, consumed events, phase events,
release working folders.
(Finished queue rows are pruned by domain/queue/queue.py, which holds every statement of the queue.) The sweeper
(orchestration_defs/housekeeping.py) calls these with the retention settings."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from domain.core.models import ConsumedEvent, IdempotencyKey, PhaseEvent, WebhookDelivery


def _prune(session: Session, key: Any, at: Any, older_than: timedelta, limit: int) -> int:
    """Delete the rows whose `at` is older than `older_than`, about `limit` at a time; how many went. The
    age is checked again on the delete: `key` may be one column of a per-tenant key (a consumed event's
    id), and another tenant's recent row of the same id stays."""
    cutoff = datetime.now(UTC) - older_than
    ids = select(key).where(at < cutoff).limit(limit).scalar_subquery()
    return len(session.execute(delete(key.class_).where(key.in_(ids), at < cutoff).returning(key)).all())


def prune_idempotency_keys(session: Session, older_than: timedelta, limit: int = 10_000) -> int:
    """Delete stored idempotent answers older than `older_than`: a retry after that is a new request."""
    return _prune(session, IdempotencyKey.id, IdempotencyKey.created_at, older_than, limit)


def prune_webhook_deliveries(session: Session, older_than: timedelta, limit: int = 10_000) -> int:
    """Delete remembered webhook delivery ids older than `older_than` (longer than GitHub redelivers)."""
    return _prune(session, WebhookDelivery.delivery_id, WebhookDelivery.received_at, older_than, limit)


def prune_consumed_events(session: Session, older_than: timedelta, limit: int = 10_000) -> int:
    """Delete the ids of events consumed longer ago than `older_than` (CONSUMED_EVENT_RETENTION_DAYS): a
    redelivery after that is answered as a new event (202, not 200 `duplicate`); the executions it had
    started are still found by their own key, so only workflows activated since then start."""
    return _prune(session, ConsumedEvent.id, ConsumedEvent.received_at, older_than, limit)


def prune_phase_events(session: Session, older_than: timedelta, limit: int = 10_000) -> int:
    """Delete users' stream events older than `older_than` (PHASE_EVENTS_RETENTION): a client reconnecting
    with an older `after` misses them. Their numbers are not reused (phase_event_sequences keeps counting)."""
    return _prune(session, PhaseEvent.id, PhaseEvent.created_at, older_than, limit)


@dataclass(frozen=True)
class PrunedFolders:
    removed: list[str]
    kept: int


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            newest = max(newest, child.lstat().st_mtime)
    return newest


def prune_release_dirs(release_dir: Path, older_than: timedelta, now: datetime | None = None) -> PrunedFolders:
    """Remove each entry directly under `release_dir` in which nothing changed for `older_than` (days:
    far longer than a release's time limit, so no running release's folder is touched). Symlinks are
    removed, never followed; nothing outside `release_dir` is removed."""
    if not release_dir.is_dir():
        return PrunedFolders([], 0)
    root = release_dir.resolve()
    cutoff = ((now or datetime.now(UTC)) - older_than).timestamp()
    removed: list[str] = []
    kept = 0
    for entry in sorted(root.iterdir()):
        if _newest_mtime(entry) >= cutoff:
            kept += 1
            continue
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink()
        elif entry.resolve().parent == root:
            shutil.rmtree(entry)
        removed.append(entry.name)
    return PrunedFolders(removed, kept)
