"""The store as a Dagster resource: the same engine and sessions the HTTP API uses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from domain.core.migrate import require_migrated
from domain.core.settings import get_settings
from domain.core.store import engine_for, transaction


class DatabaseResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """`url` empty means DATABASE_URL, or its documented default (the checkout's var/wrk.db). A store not
    migrated is refused (StoreNotMigrated names it and `wrk-orch migrate`)."""

    url: str = ""

    @property
    def engine(self) -> Engine:
        return require_migrated(engine_for(self.url or get_settings().database_url))

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction(self.engine) as session:
            yield session
