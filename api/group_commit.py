"""Group commit: concurrent requests' writes of one kind gathered into one store call.

While one batch is written (a worker thread, one statement, one commit and its WAL flush), the requests
that arrive meanwhile gather; the next batch takes them all. Under load, many requests share one thread
hop, one round trip and one fsync; a lone request is written at once (no timer, no added wait). Each
request still gets its own outcome, and its answer only once its batch is committed. The batch's writer
is a task of its own, so no request waits for others' batches before its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

MAX_BATCH = 256


class GroupCommit(Generic[Item, Outcome]):
    """`await commits(item)`: `item` written by `write` together with the items awaited meanwhile.
    `write(items)` runs in a worker thread and returns one outcome per item, in order: a value, or the
    exception that item met (raised to its caller). When `write` raises an error that `splits` says one
    item can cause alone (a constraint it breaks, a value the store refuses), the batch is split in halves
    and each written again, down to the item that fails alone; any other error (the store is down) is
    every item's answer at once. One instance per app: its batches belong to the event loop that serves
    the requests."""

    def __init__(
        self,
        write: Callable[[list[Item]], Sequence[Outcome | Exception]],
        splits: Callable[[Exception], bool],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._write = write
        self._splits = splits
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, item: Item) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            outcomes: Sequence[Outcome | Exception]
            try:
                outcomes = await run_in_threadpool(self._write_batch, [item for item, _ in batch])
            except asyncio.CancelledError:  # shutdown: the requests waiting are going too
                for _, future in [*batch, *self._pending]:
                    future.cancel()
                self._pending = []
                raise
            except Exception as exc:  # a defect of `write` (its outcomes miscounted): never leave one waiting
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its request went away (the client disconnected): the write stands
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _write_batch(self, items: list[Item]) -> list[Outcome | Exception]:
        try:
            outcomes = list(self._write(items))
        except Exception as exc:
            if len(items) == 1 or not self._splits(exc):
                return [exc] * len(items)
            half = len(items) // 2
            return self._write_batch(items[:half]) + self._write_batch(items[half:])
        if len(outcomes) != len(items):
            raise RuntimeError(f"{len(outcomes)} outcomes for {len(items)} items")
        return outcomes
