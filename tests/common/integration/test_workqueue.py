"""The work-queue runtime on real SQLite and PostgreSQL: exclusive claims, fenced saves, lease takeover, NOTIFY."""

from __future__ import annotations

import asyncio
import contextvars
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from contentpipe.common.database import (
    claim_rows,
    create_engine,
    db_now,
    is_postgresql,
    lease_held,
    release_rows,
    renew_rows,
    session_factory,
)
from contentpipe.common.ids import new_id
from contentpipe.common.notify import wake_channel
from contentpipe.common.workqueue import Lease, LeasedWorker, QueueSettings, WakeSignal
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Item:
    id: str


class SqlItems:
    """A minimal queue on the common lease helpers: rows in state 'todo' need work, 'done' do not."""

    def __init__(self, engine: AsyncEngine, table: sa.Table) -> None:
        self.table = table
        self._sessions = session_factory(engine)

    async def add(self, count: int) -> list[str]:
        ids = [new_id() for _ in range(count)]
        async with self._sessions.begin() as session:
            await session.execute(sa.insert(self.table), [{"id": i, "state": "todo", "done_by": None} for i in ids])
        return ids

    async def add_leased(self, lease: Lease) -> str:
        item_id = new_id()
        async with self._sessions.begin() as session:
            expires = await db_now(session) + timedelta(seconds=lease.seconds)
            await session.execute(
                sa.insert(self.table).values(
                    id=item_id, state="todo", done_by=None, lease_owner=lease.owner, lease_expires_at=expires
                )
            )
        return item_id

    async def leases(self) -> dict[str, str | None]:
        async with self._sessions() as session:
            rows = await session.execute(sa.select(self.table.c.id, self.table.c.lease_owner))
        return {row.id: row.lease_owner for row in rows}

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> Sequence[Item]:
        async with self._sessions.begin() as session:
            rows = await claim_rows(
                session,
                self.table,
                where=[self.table.c.state == "todo"],
                order_by=[self.table.c.id],
                limit=limit,
                lease_owner=owner,
                lease_seconds=lease_seconds,
                now=await db_now(session),
            )
        return [Item(row.id) for row in rows]

    async def renew(self, owner: str, ids: Sequence[str], lease_seconds: float) -> Collection[str]:
        async with self._sessions.begin() as session:
            return await renew_rows(
                session,
                self.table,
                ids,
                lease_owner=owner,
                lease_seconds=lease_seconds,
                now=await db_now(session),
                where=[self.table.c.state == "todo"],
            )

    async def release(self, owner: str, ids: Sequence[str] | None = None) -> None:
        async with self._sessions.begin() as session:
            if ids is None:
                ids = [
                    r[0]
                    for r in await session.execute(sa.select(self.table.c.id).where(self.table.c.lease_owner == owner))
                ]
            await release_rows(session, self.table, ids, lease_owner=owner)

    async def finish(self, item_id: str, owner: str) -> bool:
        """The handler's fenced save: written only while `owner` holds a live lease."""
        async with self._sessions.begin() as session:
            now = await db_now(session)
            result = await session.execute(
                sa.update(self.table)
                .where(self.table.c.id == item_id, lease_held(self.table, owner, now))
                .values(state="done", done_by=owner)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def expire(self, item_id: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                sa.update(self.table)
                .where(self.table.c.id == item_id)
                .values(lease_expires_at=datetime.now(UTC) - timedelta(minutes=5))
            )

    async def states(self) -> dict[str, tuple[str, str | None]]:
        async with self._sessions() as session:
            rows = await session.execute(sa.select(self.table.c.id, self.table.c.state, self.table.c.done_by))
        return {row.id: (row.state, row.done_by) for row in rows}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def items(engine: AsyncEngine) -> AsyncIterator[SqlItems]:
    metadata = sa.MetaData()
    table = sa.Table(
        f"work_items_{new_id()[-10:]}",  # the PostgreSQL database is shared by the session's tests
        metadata,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("done_by", sa.String(64), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    yield SqlItems(engine, table)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.drop_all)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_two_racing_workers_handle_each_item_exactly_once(items: SqlItems) -> None:
    ids = await items.add(60)
    handled: Counter[str] = Counter()
    finished: set[str] = set()
    all_done = asyncio.Event()

    def handler_for(owner: str) -> Callable[[Item], Awaitable[None]]:
        async def handle(item: Item) -> None:
            handled[item.id] += 1
            await asyncio.sleep(0)  # let the other worker interleave
            assert await items.finish(item.id, owner)
            finished.add(item.id)
            if len(finished) == len(ids):
                all_done.set()

        return handle

    workers = [
        LeasedWorker(
            f"items-{owner}",
            items,
            handler_for(owner),
            QueueSettings(owner=owner, concurrency=4, claim_batch=3, poll_interval=0.05),
            key=lambda item: item.id,
        )
        for owner in ("a", "b")
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        await asyncio.wait_for(all_done.wait(), timeout=60)
    finally:
        for task in tasks:
            await _stop(task)
    assert handled == Counter({i: 1 for i in ids})
    states = await items.states()
    assert {state for state, _ in states.values()} == {"done"}
    assert {by for _, by in states.values()} <= {"a", "b"}


async def test_expired_lease_is_taken_over_and_the_first_holders_save_is_refused(items: SqlItems) -> None:
    (item_id,) = await items.add(1)
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def slow_handle(item: Item) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise

    first = LeasedWorker(
        "items-a",
        items,
        slow_handle,
        QueueSettings(owner="a", lease_seconds=1.5, poll_interval=0.05),
        key=lambda i: i.id,
    )
    task = asyncio.create_task(first.run())
    try:
        await asyncio.wait_for(started.wait(), timeout=30)
        await items.expire(item_id)  # "a" stalled past its lease
        assert [i.id for i in await items.claim("b", 10, 30)] == [item_id]
        assert not await items.finish(item_id, "a")  # fenced: the stale holder writes nothing
        # The runtime's renewal finds the lease gone and stops the stale handler.
        await asyncio.wait_for(stopped.wait(), timeout=30)
        assert await items.finish(item_id, "b")
    finally:
        await _stop(task)
    assert (await items.states())[item_id] == ("done", "b")
    assert await items.renew("a", [item_id], 30) == set()


async def test_released_on_shutdown_and_claimable_at_once(items: SqlItems) -> None:
    (item_id,) = await items.add(1)
    started = asyncio.Event()

    async def handle(item: Item) -> None:
        started.set()
        await asyncio.Event().wait()

    worker = LeasedWorker("items-a", items, handle, QueueSettings(owner="a", lease_seconds=600), key=lambda i: i.id)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), timeout=30)
    await _stop(task)
    assert [i.id for i in await items.claim("b", 10, 30)] == [item_id]


async def test_an_item_created_leased_to_a_reserved_slot_runs_at_once_without_a_claim(items: SqlItems) -> None:
    claims = 0
    handled: list[tuple[str, int]] = []  # (item, claims made before it started)
    release = asyncio.Event()

    class Counting:
        async def claim(self, owner: str, limit: int, lease_seconds: float) -> Sequence[Item]:
            nonlocal claims
            claims += 1
            return await items.claim(owner, limit, lease_seconds)

        renew = items.renew
        release = items.release

    async def handle(item: Item) -> None:
        handled.append((item.id, claims))
        await release.wait()
        assert await items.finish(item.id, "a")

    # A long poll interval: an item that waited for the loop would not run within the test's time.
    settings = QueueSettings(owner="a", lease_seconds=600, poll_interval=3600, concurrency=2)
    worker = LeasedWorker("items-a", Counting(), handle, settings, key=lambda i: i.id)
    assert worker.reserve() is None  # the loop is not running: nothing may skip the queue
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.idle.wait(), timeout=30)
    claims_before = claims

    first, second = worker.reserve(), worker.reserve()
    assert first == second == Lease("a", 600)
    assert worker.reserve() is None  # both slots are promised
    first_id = await items.add_leased(first)
    worker.start_reserved(Item(first_id))
    worker.unreserve()  # the second insert found an existing row, say
    assert worker.in_flight == 1 and worker.reserve() is not None
    worker.unreserve()
    await asyncio.wait_for(_until(lambda: bool(handled)), timeout=30)
    assert handled == [(first_id, claims_before)]  # started without a claim
    release.set()
    # Its lease is given back like a claimed item's.
    await asyncio.wait_for(_until_async(lambda: _lease_of(items, first_id), None), timeout=30)
    assert (await items.states())[first_id] == ("done", "a")
    await _stop(task)


async def test_an_item_started_at_once_runs_in_the_loops_context_not_in_its_creators(items: SqlItems) -> None:
    """The call that creates an item (a gRPC handler) has its own deadline, request id and caller in context
    variables; the item's handler must not inherit them (a run started by RunPipeline would otherwise give every
    peer call of the run the RunPipeline's deadline, and stall once it passed)."""
    caller = contextvars.ContextVar("caller", default="none")
    seen: list[str] = []

    async def handle(item: Item) -> None:
        seen.append(caller.get())
        assert await items.finish(item.id, "a")

    worker = LeasedWorker("items-a", items, handle, QueueSettings(owner="a", poll_interval=3600), key=lambda i: i.id)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.idle.wait(), timeout=30)

    async def create() -> None:  # what RunPipeline does, in its own context
        caller.set("RunPipeline")
        lease = worker.reserve()
        assert lease is not None
        worker.start_reserved(Item(await items.add_leased(lease)))

    await asyncio.create_task(create())
    await asyncio.wait_for(_until(lambda: bool(seen)), timeout=30)
    assert seen == ["none"]
    await _stop(task)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def _until_async(read: Callable[[], Awaitable[object]], expected: object) -> None:
    while await read() != expected:
        await asyncio.sleep(0.01)


async def _lease_of(items: SqlItems, item_id: str) -> str | None:
    return (await items.leases())[item_id]


class CountingClaims:
    """The queue, counting its claims."""

    def __init__(self, items: SqlItems) -> None:
        self.items = items
        self.claims = 0
        self.renew = items.renew
        self.release = items.release

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> Sequence[Item]:
        self.claims += 1
        return await self.items.claim(owner, limit, lease_seconds)


async def test_a_finished_handler_with_nothing_left_in_the_queue_only_gives_its_lease_back(items: SqlItems) -> None:
    (item_id,) = await items.add(1)
    queue = CountingClaims(items)
    claims_when_done: list[int] = []

    async def handle(item: Item) -> None:
        assert await items.finish(item.id, "a")
        claims_when_done.append(queue.claims)

    settings = QueueSettings(owner="a", lease_seconds=600, poll_interval=3600, concurrency=4)
    worker = LeasedWorker("items-a", queue, handle, settings, key=lambda i: i.id)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(_until(lambda: bool(claims_when_done)), timeout=30)
    await asyncio.wait_for(_until_async(lambda: _lease_of(items, item_id), None), timeout=30)  # given back
    assert queue.claims == claims_when_done[0]  # the claim that found it was short: none after it finished
    worker.wake.set()  # new work announced: the loop asks the queue again
    await asyncio.wait_for(_until(lambda: queue.claims == claims_when_done[0] + 1), timeout=30)
    await _stop(task)


async def test_a_finished_handler_of_a_saturated_worker_claims_what_waits_without_a_poll(items: SqlItems) -> None:
    ids = await items.add(3)

    async def handle(item: Item) -> None:
        assert await items.finish(item.id, "a")

    # One at a time and an hour between polls: each next item is claimed because the previous one finished.
    settings = QueueSettings(owner="a", lease_seconds=600, poll_interval=3600, concurrency=1)
    worker = LeasedWorker("items-a", items, handle, settings, key=lambda i: i.id)
    task = asyncio.create_task(worker.run())

    async def all_done() -> bool:
        return {state for state, _ in (await items.states()).values()} == {"done"}

    await asyncio.wait_for(_until_async(all_done, True), timeout=30)
    assert set(await items.states()) == set(ids)
    await _stop(task)


async def test_handlers_finishing_all_the_time_do_not_hold_off_the_poll(items: SqlItems) -> None:
    handled: list[str] = []

    async def handle(item: Item) -> None:
        handled.append(item.id)
        assert await items.finish(item.id, "a")

    settings = QueueSettings(owner="a", lease_seconds=600, poll_interval=0.3, concurrency=8)
    worker = LeasedWorker("items-a", items, handle, settings, key=lambda i: i.id)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.idle.wait(), timeout=30)
    (unannounced,) = await items.add(1)  # queued without a wake-up: only a poll finds it
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Meanwhile items started here finish every 20 ms, each nudging the loop to give its lease back.
    while unannounced not in handled:
        assert loop.time() - started < 10, "the poll never ran"
        lease = worker.reserve()
        if lease is not None:
            worker.start_reserved(Item(await items.add_leased(lease)))
        await asyncio.sleep(0.02)
    await _stop(task)


async def test_drain_handles_everything_claimable_then_returns(items: SqlItems) -> None:
    ids = await items.add(7)

    async def handle(item: Item) -> None:
        assert await items.finish(item.id, "a")

    worker = LeasedWorker(
        "items-a", items, handle, QueueSettings(owner="a", concurrency=3, claim_batch=2), key=lambda i: i.id
    )
    assert await worker.drain() == len(ids)
    assert {state for state, _ in (await items.states()).values()} == {"done"}


async def test_notify_wakes_a_worker_on_another_engine_without_waiting_for_its_poll(
    items: SqlItems, engine: AsyncEngine, database_url: str
) -> None:
    if not is_postgresql(engine):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; SQLite runs one process with the in-process wake-up")
    other_engine = create_engine(database_url)  # "another replica": its own pool and LISTEN connection
    other_signal = WakeSignal("items")
    listener = wake_channel(other_engine, "contentpipe_test_items", other_signal)
    sender_signal = WakeSignal("items")
    sender = wake_channel(engine, "contentpipe_test_items", sender_signal)
    assert listener is not None and sender is not None
    handled = asyncio.Event()
    claims = 0

    class CountingItems(SqlItems):
        async def claim(self, owner: str, limit: int, lease_seconds: float) -> Sequence[Item]:
            nonlocal claims
            claims += 1
            return await super().claim(owner, limit, lease_seconds)

    other_items = CountingItems(other_engine, items.table)

    async def handle(item: Item) -> None:
        assert await other_items.finish(item.id, "replica-2")
        handled.set()

    # An hour between polls: only the notification can wake it.
    worker = LeasedWorker(
        "items",
        other_items,
        handle,
        QueueSettings(owner="replica-2", poll_interval=3600),
        key=lambda i: i.id,
        wake=other_signal,
    )
    listen_task = asyncio.create_task(listener.listen_forever())
    worker_task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(listener.listening.wait(), timeout=30)
        # The listener's catch-up wake-up is handled and the worker sleeps: nothing but a notification wakes it now.
        while not worker.idle.is_set() or other_signal.is_set():
            assert not worker_task.done(), worker_task.result()
            await asyncio.sleep(0.01)
        claims_before = claims
        (item_id,) = await items.add(1)
        sender_signal.set()  # replica 1 queued work
        await asyncio.wait_for(handled.wait(), timeout=30)
    finally:
        await _stop(worker_task)
        await _stop(listen_task)
        await sender.close()
        await other_engine.dispose()
    assert (await items.states())[item_id] == ("done", "replica-2")
    assert claims > claims_before
