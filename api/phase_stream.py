"""`PhaseStream`, one per API process: one LISTEN connection on PostgreSQL (psycopg 3 async), one poller
on SQLite, each waking the subscribers of the streams that changed. Subscribers re-read from the table
(domain/phases/phase_stream.py); a lost notification costs latency (the resync interval), never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from domain.core.store import is_postgres, read_transaction
from domain.phases.phase_events import NOTIFY_CHANNEL
from domain.phases.phase_stream import READ_BATCH, StreamKey, events_after, last_seq, last_seqs, listen_conninfo

log = logging.getLogger("wrk.phase_stream")


@dataclass(eq=False)
class _Subscriber:
    key: StreamKey
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class PhaseStream:
    """Fans the store's phase events out to this process's subscribers (WebSocket and SSE clients).

    Started on the first subscription, in the running event loop; `close()` stops it (app shutdown).
    """

    def __init__(self, engine: Engine, *, poll_interval_s: float = 0.5, resync_s: float = 30.0) -> None:
        self.engine = engine
        self.poll_interval_s = poll_interval_s
        self.resync_s = resync_s  # a subscriber re-reads this often even when nothing woke it
        self._subscribers: dict[StreamKey, set[_Subscriber]] = {}
        self._task: asyncio.Task[None] | None = None

    # -- subscribers -------------------------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        return sum(len(subs) for subs in self._subscribers.values())

    def _start(self) -> None:
        if self._task is None or self._task.done():
            loop_body = self._listen() if is_postgres(self.engine) else self._poll()
            self._task = asyncio.get_running_loop().create_task(loop_body, name="phase-stream")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _wake(self, key: StreamKey) -> None:
        for subscriber in self._subscribers.get(key, ()):
            subscriber.wake.set()

    def _wake_all(self) -> None:
        for subs in self._subscribers.values():
            for subscriber in subs:
                subscriber.wake.set()

    async def last_seq(self, tenant_id: str, user_id: str) -> int:
        def load() -> int:
            with read_transaction(self.engine) as session:
                return last_seq(session, tenant_id, user_id)

        return await run_in_threadpool(load)

    async def events(self, tenant_id: str, user_id: str, after: int) -> AsyncGenerator[dict[str, Any], None]:
        """The stream's events with `seq > after`: the stored ones first, then each new one as it is
        committed, forever (the caller stops iterating; use contextlib.aclosing)."""
        self._start()
        key = (tenant_id, user_id)
        subscriber = _Subscriber(key)
        # Registered before the first read: an append committed during that read wakes it again.
        self._subscribers.setdefault(key, set()).add(subscriber)

        def load(since: int) -> list[dict[str, Any]]:
            with read_transaction(self.engine) as session:
                return events_after(session, tenant_id, user_id, since)

        try:
            while True:
                subscriber.wake.clear()
                batch = await run_in_threadpool(load, after)
                for event in batch:
                    yield event
                    after = event["seq"]
                if len(batch) == READ_BATCH:
                    continue  # more stored events: read on before waiting
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(subscriber.wake.wait(), self.resync_s)
        finally:
            subs = self._subscribers.get(key)
            if subs is not None:
                subs.discard(subscriber)
                if not subs:
                    del self._subscribers[key]

    # -- PostgreSQL: one LISTEN connection ----------------------------------------------------------

    def _on_notice(self, payload: str) -> None:
        try:
            notice = json.loads(payload)
            key = (str(notice["tenant_id"]), str(notice["user_id"]))
        except (ValueError, KeyError, TypeError):
            log.warning(json.dumps({"event": "phase_stream_bad_notice", "payload": payload[:200]}))
            self._wake_all()  # cannot tell whose stream moved: everybody re-reads
            return
        self._wake(key)

    async def _listen(self) -> None:
        import psycopg  # only the PostgreSQL path needs the async driver

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    listen_conninfo(self.engine), autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 0.5
                    # Whatever was committed while no LISTEN was active is read now.
                    self._wake_all()
                    async for notice in connection.notifies():
                        self._on_notice(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store went away: reconnect with backoff, subscribers keep waiting
                log.warning(
                    json.dumps({"event": "phase_stream_listen_failed", "error": repr(exc)[:300], "retry_in_s": delay})
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- SQLite: one poller -------------------------------------------------------------------------

    async def _poll(self) -> None:
        known: dict[StreamKey, int] = {}

        def load(keys: list[StreamKey]) -> dict[StreamKey, int]:
            with read_transaction(self.engine) as session:
                return last_seqs(session, keys)

        while True:
            keys = list(self._subscribers)
            if keys:
                try:
                    current = await run_in_threadpool(load, keys)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a busy or missing file: try again next tick
                    log.warning(json.dumps({"event": "phase_stream_poll_failed", "error": repr(exc)[:300]}))
                    current = {}
                for key in keys:
                    seq = current.get(key, 0)
                    if known.get(key) != seq:
                        known[key] = seq
                        self._wake(key)
                for key in [k for k in known if k not in self._subscribers]:
                    del known[key]
            await asyncio.sleep(self.poll_interval_s)
