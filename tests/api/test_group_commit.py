"""Group commit: the writes of requests that arrive together are one store call, each request still gets
its own outcome; and the phase endpoint through it, many POSTs at once."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from sqlalchemy import func, select

from api.app import create_app
from api.group_commit import GroupCommit
from domain.core.models import TriggerQueue
from domain.core.store import transaction
from domain.phases import phases
from tests.api.conftest import bearer, make_token
from tests.domain import factories


class Bad(Exception):
    pass


class Down(Exception):
    pass


def splits(exc: Exception) -> bool:
    return isinstance(exc, Bad)


def test_items_that_arrive_while_a_batch_is_written_are_written_together():
    batches: list[list[int]] = []
    first_written = threading.Event()

    def write(items: list[int]) -> list[int | Exception]:
        batches.append(items)
        if len(batches) == 1:
            first_written.wait(30)  # the first batch is being written while the others arrive
        return [Bad(f"item {n}") if n == 7 else n * 10 for n in items]

    async def main() -> list[int | BaseException]:
        commits: GroupCommit[int, int] = GroupCommit(write, splits)
        first = asyncio.ensure_future(commits(0))
        await asyncio.sleep(0)  # item 0 alone: written at once
        others = [asyncio.ensure_future(commits(n)) for n in range(1, 10)]
        await asyncio.sleep(0)
        first_written.set()
        return await asyncio.gather(first, *others, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert batches == [[0], list(range(1, 10))]
    assert [o if isinstance(o, int) else str(o) for o in outcomes] == [
        0, 10, 20, 30, 40, 50, 60, "item 7", 80, 90
    ]  # fmt: skip


def _held_then(write_rest, items):
    """Write "hold" alone, then `items` as one batch (they arrive while "hold" is written); the outcomes."""
    calls: list[list[str]] = []
    release = threading.Event()

    def write(batch: list[str]) -> list[str | Exception]:
        calls.append(batch)
        if batch == ["hold"]:
            release.wait(30)
            return ["HOLD"]
        return write_rest(batch)

    async def main() -> list[str | BaseException]:
        commits: GroupCommit[str, str] = GroupCommit(write, splits)
        hold = asyncio.ensure_future(commits("hold"))
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(commits(item)) for item in items]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(hold, *rest, return_exceptions=True)

    return asyncio.run(main()), calls


def test_a_batch_refused_for_one_item_is_split_until_that_item_fails_alone():
    def write(batch: list[str]) -> list[str | Exception]:
        if "bad" in batch:
            raise Bad("a constraint the bad item breaks")
        return [item.upper() for item in batch]

    (hold, a, bad, b, c), calls = _held_then(write, ["a", "bad", "b", "c"])
    assert (hold, a, b, c) == ("HOLD", "A", "B", "C")
    assert isinstance(bad, Bad)
    assert calls == [["hold"], ["a", "bad", "b", "c"], ["a", "bad"], ["a"], ["bad"], ["b", "c"]]


def test_a_batch_that_fails_for_another_reason_fails_every_item_at_once():
    def write(batch: list[str]) -> list[str | Exception]:
        raise Down("the store cannot be reached")

    (hold, *rest), calls = _held_then(write, ["a", "b", "c"])
    assert hold == "HOLD" and all(isinstance(outcome, Down) for outcome in rest)
    assert calls == [["hold"], ["a", "b", "c"]]  # not written again one by one


def test_a_write_that_miscounts_its_outcomes_fails_its_batch_rather_than_leave_one_waiting():
    (hold, a, b), _ = _held_then(lambda batch: ["only one"], ["a", "b"])
    assert hold == "HOLD" and isinstance(a, RuntimeError) and isinstance(b, RuntimeError)


@pytest.fixture
def tenant(engine) -> str:
    with transaction(engine) as session:
        return factories.tenant(session).id


def test_phase_posts_at_once_are_each_queued_and_answered_with_their_own_trigger(settings, engine, tenant, monkeypatch):
    batch_sizes: list[int] = []
    accept_many = phases.accept_many

    def counted(connection, posts):
        batch_sizes.append(len(posts))
        return accept_many(connection, posts)

    monkeypatch.setattr(phases, "accept_many", counted)
    headers = bearer(make_token(settings, tenants=[tenant], roles=["service"], sub="main-api"))
    stranger = bearer(make_token(settings, tenants=["no-such-tenant"], roles=["service"], sub="main-api"))
    app = create_app(settings, engine)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:

            def post(n: int, sync: str | None = None, token: dict[str, str] = headers):
                body = {"user_id": f"u{n}", "sync_id": sync or f"s{n}"}
                return http.post("/api/v1/workflow/phase/1", json=body, headers=token)

            return await asyncio.gather(
                *(post(n) for n in range(30)),
                post(3),  # a caller's retry of u3's trigger, in the same moment: the same trigger
                post(3, sync="s3", token=stranger),  # a tenant the store does not know: fails alone
            )

    answers = asyncio.run(main())
    *posted, retry, refused = answers
    assert [a.status_code for a in posted] == [202] * 30, [a.text for a in posted if a.status_code != 202]
    ids = [a.json()["trigger_id"] for a in posted]
    assert len(set(ids)) == 30 and [a.json()["sync_id"] for a in posted] == [f"s{n}" for n in range(30)]
    assert retry.status_code == 202 and retry.json()["trigger_id"] == ids[3]
    # a token naming a tenant the store does not know: the store refuses its row (foreign key), alone
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert max(batch_sizes) > 1, batch_sizes  # they were written together
    with transaction(engine) as session:
        assert session.scalar(select(func.count()).select_from(TriggerQueue)) == 30
        rows = session.execute(select(TriggerQueue.id, TriggerQueue.payload)).all()
    assert {row_id: payload["user_id"] for row_id, payload in rows} == {ids[n]: f"u{n}" for n in range(30)}
