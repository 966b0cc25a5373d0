"""Long-poll wake-ups across replicas on a real PostgreSQL: a key notified on one engine wakes the waiters on it
behind another engine's LISTEN, the keys of one burst go out in one statement, and a replica skips its own."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from contentpipe.common.changes import ChangeNotifier, wait_for
from contentpipe.common.database import create_engine
from contentpipe.common.notify import ChangeChannel, change_channel

pytestmark = pytest.mark.integration


class Replica:
    """One process's view: its own engine (pool and LISTEN connection), notifier and channel."""

    def __init__(
        self, database_url: str, *, listeners_ttl: float | None = None, name: str = "contentpipe_test_changes"
    ) -> None:
        self.engine = create_engine(database_url)
        self.changes = ChangeNotifier()
        channel = (
            change_channel(self.engine, name, self.changes)
            if listeners_ttl is None
            else ChangeChannel(self.engine, name, self.changes, listeners_ttl=listeners_ttl)
        )
        assert channel is not None
        self.channel: ChangeChannel = channel
        self.listener: asyncio.Task[None] | None = None

    async def listen(self) -> None:
        self.listener = asyncio.create_task(self.channel.listen_forever())
        await asyncio.wait_for(self.channel.listening.wait(), timeout=30)

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.listener
        await self.channel.close()
        await self.engine.dispose()


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    writer, waiter = Replica(postgres_url), Replica(postgres_url)
    try:
        await writer.listen()
        await waiter.listen()
        yield writer, waiter
    finally:
        await writer.close()
        await waiter.close()


async def test_a_change_on_one_replica_wakes_the_long_poll_on_another(replicas: tuple[Replica, Replica]) -> None:
    writer, waiter = replicas
    stored = {"g1": "QUEUED"}  # the row both replicas read
    reads = 0

    async def read() -> str:
        nonlocal reads
        reads += 1
        return stored["g1"]

    # Re-read and bound of an hour: only the notification from the other replica can end this wait in time.
    waiting = asyncio.create_task(wait_for(waiter.changes, "g1", read, lambda s: s != "QUEUED", 3600, recheck=3600))
    while reads == 0:
        await asyncio.sleep(0.01)
    stored["g1"] = "RUNNING"
    writer.changes.notify("g1")
    assert await asyncio.wait_for(waiting, timeout=10) == "RUNNING"


async def test_the_keys_of_one_burst_go_out_in_one_statement(replicas: tuple[Replica, Replica]) -> None:
    writer, waiter = replicas
    keys = [f"post-{n:04d}-{'x' * 60}" for n in range(300)]  # ~20 KB of keys: more than one payload's worth
    stored = dict.fromkeys(keys, "QUEUED")
    polls = Polls(waiter.changes, stored)
    waiting = [polls.start(key) for key in keys]
    await polls.all_read(len(keys))
    for key in keys:  # one event-loop tick, as a batch of saves committed together would
        stored[key] = "PUBLISHED"
        writer.changes.notify(key)
    assert await asyncio.wait_for(asyncio.gather(*waiting), timeout=10) == ["PUBLISHED"] * len(keys)
    assert writer.channel.statements == 1


async def test_a_replica_skips_its_own_notifications(replicas: tuple[Replica, Replica]) -> None:
    writer, waiter = replicas
    stored = {"g1": "QUEUED", "marker": "QUEUED"}
    mine, theirs = Polls(writer.changes, stored), Polls(waiter.changes, stored)
    never_done = mine.start("g1", done=lambda _: False)
    their_poll = theirs.start("g1")
    await mine.all_read(1)
    await theirs.all_read(1)
    stored["g1"] = "RUNNING"
    writer.changes.notify("g1")
    assert await asyncio.wait_for(their_poll, timeout=10) == "RUNNING"
    # A later notification from the waiter's side reaches the writer's listener after the writer's own one did:
    # once it arrived, the writer's poll has read once for its own change (in-process), not twice.
    marker = mine.start("marker")
    await mine.all_read(2)
    stored["marker"] = "DONE"
    waiter.changes.notify("marker")
    assert await asyncio.wait_for(marker, timeout=10) == "DONE"
    assert mine.reads["g1"] == 2  # the first read, and the one after `notify`
    never_done.cancel()


async def test_a_replica_alone_on_its_channel_sends_nothing_until_another_one_listens(postgres_url: str) -> None:
    # A channel of its own: an earlier test's listener stays in pg_stat_activity for a moment after it closed.
    name = f"contentpipe_test_alone_{uuid.uuid4().hex[:12]}"
    writer = Replica(postgres_url, listeners_ttl=0.2, name=name)
    waiter = Replica(postgres_url, name=name)
    try:
        await writer.listen()
        writer.changes.notify("g0")
        await writer.channel.flush()
        assert writer.channel.statements == 0  # no other replica listens
        await waiter.listen()
        await asyncio.sleep(0.3)  # longer than the writer trusts what it found
        stored = {"g1": "QUEUED"}
        polls = Polls(waiter.changes, stored)
        waiting = polls.start("g1")
        await polls.all_read(1)
        stored["g1"] = "RUNNING"
        writer.changes.notify("g1")
        assert await asyncio.wait_for(waiting, timeout=10) == "RUNNING"
        assert writer.channel.statements == 1
    finally:
        await writer.close()
        await waiter.close()


class Polls:
    """Long polls on one replica's notifier over a shared dict (the row); counts the reads of each key."""

    def __init__(self, changes: ChangeNotifier, stored: dict[str, str]) -> None:
        self._changes = changes
        self._stored = stored
        self.reads: dict[str, int] = {}

    def start(self, key: str, done: Callable[[str], bool] | None = None) -> asyncio.Task[str]:
        first = self._stored[key]

        async def read() -> str:
            self.reads[key] = self.reads.get(key, 0) + 1
            return self._stored[key]

        # Re-read and bound of an hour: only a notification can end these waits within the tests' timeouts.
        return asyncio.create_task(
            wait_for(self._changes, key, read, done or (lambda state: state != first), 3600, recheck=3600)
        )

    async def all_read(self, count: int) -> None:
        while len(self.reads) < count:
            await asyncio.sleep(0.01)
