"""Housekeeping: the sweeper prunes idempotency keys, webhook deliveries, finished queue rows and release
working folders once they are older than their retention settings, and keeps everything younger."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select, update

from domain.core import housekeeping
from domain.core.models import IdempotencyKey, TriggerQueue, WebhookDelivery
from domain.core.settings import Settings, get_settings
from domain.core.store import transaction
from domain.queue import queue
from orchestration_defs.housekeeping import queue_sweeper
from resources.dagster_resources import DatabaseResource
from tests.domain import factories

OLD = datetime.now(UTC) - timedelta(days=30)


def _age(path, when: datetime) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (when.timestamp(), when.timestamp()), follow_symlinks=False)


def _store_rows(engine) -> dict[str, list]:
    """One old and one new row of each kind; returns the ids that must survive a 7-day retention."""
    now = datetime.now(UTC)
    with transaction(engine) as session:
        tenant = factories.tenant(session).id
        for key, created in (("old", OLD), ("new", now)):
            session.add(
                IdempotencyKey(
                    tenant_id=tenant, scope="deploy", key=key, request_hash="h", response_status=200, created_at=created
                )
            )
            session.add(WebhookDelivery(delivery_id=f"{key}-delivery", event="release", received_at=created))
        ids = {}
        for name in ("old_done", "new_done", "old_dead", "old_cancelled", "old_available"):
            ids[name] = queue.enqueue(session, "release", None, {"tag": name})
        queue.cancel(session, ids["old_cancelled"])
        for name, state in (("old_done", "done"), ("new_done", "done"), ("old_dead", "dead")):
            finished = OLD if name.startswith("old") else now
            session.execute(
                update(TriggerQueue).where(TriggerQueue.id == ids[name]).values(state=state, finished_at=finished)
            )
        session.execute(update(TriggerQueue).where(TriggerQueue.id == ids["old_cancelled"]).values(finished_at=OLD))
        session.execute(update(TriggerQueue).where(TriggerQueue.id == ids["old_available"]).values(created_at=OLD))
    return ids


def test_prune_store_rows_older_than_their_retention(engine):
    ids = _store_rows(engine)
    with transaction(engine) as session:
        assert housekeeping.prune_idempotency_keys(session, timedelta(days=7)) == 1
        assert housekeeping.prune_webhook_deliveries(session, timedelta(days=7)) == 1
        assert queue.prune(session, timedelta(days=7)) == 2
    with transaction(engine) as session:
        assert session.scalars(select(IdempotencyKey.key)).all() == ["new"]
        assert session.scalars(select(WebhookDelivery.delivery_id)).all() == ["new-delivery"]
        left = set(session.scalars(select(TriggerQueue.id)))
    assert left == {ids["new_done"], ids["old_dead"], ids["old_available"]}  # dead rows wait for a requeue


def test_prune_release_dirs_removes_only_old_entries_under_the_release_dir(tmp_path):
    root = tmp_path / "releases"
    (root / "v1.0.0" / "artifacts" / "node").mkdir(parents=True)
    (root / "v1.0.0" / "artifacts" / "node" / "a.zip").write_bytes(b"x")
    (root / "v2.0.0").mkdir()
    (root / "v2.0.0" / "SHA256SUMS").write_text("y")
    (root / "v3.0.0").mkdir()
    (root / "v3.0.0" / "old.zip").write_bytes(b"z")
    (root / "v3.0.0" / "fresh.zip").write_bytes(b"z")  # a release still writing here
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    (root / "link").symlink_to(outside, target_is_directory=True)
    for path in (root / "v1.0.0", root / "v3.0.0" / "old.zip", root / "link"):
        _age(path, OLD)
    _age(outside, OLD)
    pruned = housekeeping.prune_release_dirs(root, timedelta(days=14))
    assert sorted(pruned.removed) == ["link", "v1.0.0"] and pruned.kept == 2
    assert sorted(p.name for p in root.iterdir()) == ["v2.0.0", "v3.0.0"]
    assert (outside / "keep").read_text() == "k"  # a symlink is removed, never followed
    assert housekeeping.prune_release_dirs(tmp_path / "missing", timedelta(days=1)).removed == []


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance


def test_the_sweeper_prunes_with_the_retention_settings(engine, database_url, instance, tmp_path, monkeypatch):
    ids = _store_rows(engine)
    root = tmp_path / "releases"
    (root / "old-tag").mkdir(parents=True)
    (root / "new-tag").mkdir()
    _age(root / "old-tag", OLD)
    for name, value in {
        "DATABASE_URL": database_url,
        "RELEASE_DIR": str(root),
        "QUEUE_RETENTION_DAYS": "7",
        "IDEMPOTENCY_KEY_RETENTION_DAYS": "7",
        "WEBHOOK_DELIVERY_RETENTION_DAYS": "7",
        "RELEASE_DIR_RETENTION_DAYS": "7",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = queue_sweeper.execute_in_process(
            instance=instance, resources={"database": DatabaseResource(url=database_url)}
        )
    finally:
        get_settings.cache_clear()
    summary = result.output_for_node("sweep_queue")
    assert (summary["pruned"], summary["idempotency_keys_pruned"], summary["webhook_deliveries_pruned"]) == (2, 1, 1)
    assert summary["release_dirs_pruned"] == 1 and [p.name for p in root.iterdir()] == ["new-tag"]
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(TriggerQueue)) == 3
        assert session.get(TriggerQueue, ids["old_dead"]) is not None


def test_retention_settings_have_documented_defaults():
    fields = Settings.model_fields
    assert [fields[f"{name}_retention_days"].default for name in ("queue", "idempotency_key")] == [7.0, 1.0]
    assert [fields[f"{name}_retention_days"].default for name in ("webhook_delivery", "release_dir")] == [7.0, 14.0]
    settings_doc = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text()
    for name in (
        "QUEUE_RETENTION_DAYS",
        "IDEMPOTENCY_KEY_RETENTION_DAYS",
        "WEBHOOK_DELIVERY_RETENTION_DAYS",
        "RELEASE_DIR_RETENTION_DAYS",
    ):
        assert f"`{name}`" in settings_doc


def test_prune_consumed_events_older_than_their_retention(engine):
    from domain.core.models import ConsumedEvent
    from tests.domain import factories

    with transaction(engine) as session:
        tenant = factories.tenant(session).id
        for event_id, received in (("old-event", OLD), ("new-event", datetime.now(UTC))):
            session.add(
                ConsumedEvent(
                    id=event_id,
                    tenant_id=tenant,
                    type="order.created",
                    occurred_at=received,
                    source="http",
                    received_at=received,
                )
            )
    with transaction(engine) as session:
        assert housekeeping.prune_consumed_events(session, timedelta(days=7)) == 1
    with transaction(engine) as session:
        assert session.scalars(select(ConsumedEvent.id)).all() == ["new-event"]


def test_pruning_an_old_event_keeps_another_tenants_recent_event_of_the_same_id(engine):
    from domain.core.models import ConsumedEvent
    from tests.domain import factories

    with transaction(engine) as session:
        old_tenant, new_tenant = factories.tenant(session).id, factories.tenant(session).id
        for tenant, received in ((old_tenant, OLD), (new_tenant, datetime.now(UTC))):
            session.add(
                ConsumedEvent(
                    id="shared-event",
                    tenant_id=tenant,
                    type="shard.updated",
                    occurred_at=received,
                    source="http",
                    received_at=received,
                )
            )
    with transaction(engine) as session:
        assert housekeeping.prune_consumed_events(session, timedelta(days=7)) == 1
    with transaction(engine) as session:
        assert session.scalars(select(ConsumedEvent.tenant_id)).all() == [new_tenant]
