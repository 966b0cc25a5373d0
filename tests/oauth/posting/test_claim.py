"""The posting queue's storage and dispatch: the claim starts the attempt it leases (what `Post.start_attempt` says),
`add` says whether it inserted, and only a post this replica inserted is started here."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from contentpipe.common.database import create_engine, run_migrations
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.ids import new_id
from contentpipe.common.workqueue import Lease
from contentpipe.oauth.adapters.post_repository import SqlPostRepository
from contentpipe.oauth.domain.posts import Platform, Post, PostError, PostOptions, PostState
from contentpipe.oauth.service_layer.posting_ports import PostDispatch, PostIdTaken

from tests.fakes.publishing_tokens import FakeConnection, FakeTokens
from tests.oauth.posting.harness import MIGRATIONS, VERSION_TABLE, posting_stack, reset_tables, statements_on_posts

pytestmark = pytest.mark.integration

LONG_AGO = datetime(2024, 1, 1, tzinfo=UTC)


def due_post(state: PostState, attempts: int, **fields: object) -> Post:
    return Post(
        id=new_id(),
        owner="user-1",
        connection_id="outbox",
        platform=Platform.OUTBOX,
        text=f"a {state.value} post",
        media=(),
        options=PostOptions(),
        create_time=LONG_AGO,
        account_id="user-1",
        state=state,
        attempts=attempts,
        update_time=LONG_AGO,
        next_attempt_time=LONG_AGO,
        **fields,  # type: ignore[arg-type]
    )


async def test_the_claim_stores_the_started_attempt(database_url: str) -> None:
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        await reset_tables(engine)
        repository = SqlPostRepository(engine)
        error = PostError(ErrorClass.RETRYABLE, "OUTCOME_UNKNOWN", "timeout", LONG_AGO)
        stored = [
            due_post(PostState.QUEUED, 0),
            due_post(PostState.QUEUED, 2, last_error=error),  # deferred after two failed attempts
            due_post(PostState.PUBLISHING, 1),  # a crashed worker's
            due_post(PostState.UNCONFIRMED, 1, create_sent_time=LONG_AGO, reconcile_attempts=1, last_error=error),
        ]
        for post in stored:
            await repository.add(post)
        before = datetime.now(UTC) - timedelta(seconds=5)  # PostgreSQL's clock, on this machine
        claimed = {post.id: post for post in await repository.claim("worker-1", 10, 30)}
        assert set(claimed) == {post.id for post in stored}
        for post in stored:
            got = claimed[post.id]
            assert got.update_time is not None and got.update_time > before
            expected = copy.deepcopy(post)
            expected.start_attempt(got.update_time)
            assert got == expected, post.state
            assert await repository.get(post.id) == got  # as stored, not only as returned
        first = claimed[stored[0].id]
        assert (first.state, first.attempts) == (PostState.PUBLISHING, 1)
        assert (claimed[stored[1].id].state, claimed[stored[1].id].attempts) == (PostState.PUBLISHING, 3)
        assert claimed[stored[2].id].attempts == 1 and claimed[stored[3].id].state is PostState.UNCONFIRMED
        assert await repository.claim("worker-2", 10, 30) == []  # leased with it
    finally:
        await engine.dispose()


async def test_a_queued_outbox_post_is_claimed_then_published_in_one_save(database_url: str, tmp_path: Path) -> None:
    tokens = FakeTokens()
    tokens.add(FakeConnection(id="outbox", owner="user-1", platform="outbox", account_id="user-1", token=""))
    async with posting_stack(database_url, tmp_path, tokens=tokens, worker=False) as stack:
        created = await stack.create(connection="connections/outbox", text="once")
        with statements_on_posts(stack.engine) as sent:
            assert await stack.app.worker.run_once() == 1
        assert sent == ["UPDATE", "UPDATE"]  # the claim (which starts the attempt), then the published post
        post = await stack.get(created.name)
        assert post.state == pb.POST_STATE_PUBLISHED and post.attempts == 1


async def test_a_post_due_now_is_inserted_leased_and_published_by_this_replica_without_waiting(
    database_url: str, tmp_path: Path
) -> None:
    tokens = FakeTokens()
    tokens.add(FakeConnection(id="outbox", owner="user-1", platform="outbox", account_id="user-1", token=""))
    # An hour between the queue's polls: a post that waited for the loop would not be published within the test.
    slow = {"OAUTH_POSTING_POLL_INTERVAL": "3600"}
    async with posting_stack(database_url, tmp_path, tokens=tokens, env=slow) as stack:
        await asyncio.wait_for(stack.app.worker.queue.idle.wait(), timeout=30)  # the loop runs and sleeps
        inserts: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if statement.startswith("INSERT INTO posts"):
                inserts.append(statement)

        sa.event.listen(stack.engine.sync_engine, "before_cursor_execute", record)
        try:
            created = await stack.create(connection="connections/outbox", text="at once")
        finally:
            sa.event.remove(stack.engine.sync_engine, "before_cursor_execute", record)
        # Leased to this replica and its attempt started by the insert itself.
        assert created.state == pb.POST_STATE_PUBLISHING and created.attempts == 1
        assert len(inserts) == 1 and "lease_owner" in inserts[0]
        done = await stack.wait(created.name, {pb.POST_STATE_PUBLISHED}, timeout=10)
        assert done.attempts == 1


async def test_a_post_created_where_no_queue_runs_waits_unleased_in_the_queue(
    database_url: str, tmp_path: Path
) -> None:
    tokens = FakeTokens()
    tokens.add(FakeConnection(id="outbox", owner="user-1", platform="outbox", account_id="user-1", token=""))
    async with posting_stack(database_url, tmp_path, tokens=tokens, worker=False) as stack:
        created = await stack.create(connection="connections/outbox", text="later")
        async with stack.engine.connect() as connection:
            post_id = created.name.split("/")[1]
            lease = await connection.scalar(sa.text("SELECT lease_owner FROM posts WHERE id = :id"), {"id": post_id})
        assert lease is None
        assert await stack.app.worker.run_once() == 1  # a claim finds it


async def test_the_save_that_publishes_a_post_gives_its_lease_back_with_no_release_after_it(
    database_url: str, tmp_path: Path
) -> None:
    tokens = FakeTokens()
    tokens.add(FakeConnection(id="outbox", owner="user-1", platform="outbox", account_id="user-1", token=""))
    async with posting_stack(database_url, tmp_path, tokens=tokens, worker=False) as stack:
        created = await stack.create(connection="connections/outbox", text="later")
        releases: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if statement.startswith("UPDATE posts SET lease_owner="):  # a release: only the lease columns
                releases.append(statement)

        sa.event.listen(stack.engine.sync_engine, "before_cursor_execute", record)
        try:
            assert await stack.app.worker.queue.drain() == 1  # the runtime's loop, to its end
        finally:
            sa.event.remove(stack.engine.sync_engine, "before_cursor_execute", record)
        async with stack.engine.connect() as connection:
            state, lease = (
                await connection.execute(
                    sa.text("SELECT state, lease_owner FROM posts WHERE id = :id"), {"id": created.name.split("/")[1]}
                )
            ).one()
        assert (state, lease) == ("PUBLISHED", None)
        assert releases == []


async def test_concurrent_saves_are_one_statement_each_post_fenced_by_its_lease(database_url: str) -> None:
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        await reset_tables(engine)
        repository = SqlPostRepository(engine)
        for _ in range(4):
            await repository.add(due_post(PostState.QUEUED, 0))
        claimed = await repository.claim("worker-1", 10, 30)
        assert len(claimed) == 4
        published, failed, stolen, deferred = claimed
        now = datetime.now(UTC)
        published.mark_published("p-1", "https://example.test/p-1", now)
        failed.fail(PostError(ErrorClass.REJECTED_BY_PLATFORM, "TEXT_TOO_LONG", "too long", now))
        deferred.next_attempt_time = now + timedelta(minutes=5)
        with statements_on_posts(engine) as sent:
            outcomes = await asyncio.gather(
                repository.save(published, "worker-1", release=True),
                repository.save(failed, "worker-1", release=True),
                repository.save(stolen, "worker-2", release=True),  # not the lease holder: writes nothing
                repository.save(deferred, "worker-1"),
            )
        assert list(outcomes) == [True, True, False, True]
        # Saved together: one statement on PostgreSQL; SQLite writes each post in one shared transaction.
        assert sent.count("UPDATE") == (4 if database_url.startswith("sqlite") else 1)
        for post in (published, failed, deferred):
            assert await repository.get(post.id) == post
        async with engine.connect() as connection:
            rows = (await connection.execute(sa.text("SELECT id, lease_owner FROM posts"))).all()
        leases = {row.id: row.lease_owner for row in rows}
        # The saves that gave the lease back did so in the same write; the others still hold theirs.
        assert leases == {published.id: None, failed.id: None, stolen.id: "worker-1", deferred.id: "worker-1"}
    finally:
        await engine.dispose()


async def test_add_says_whether_it_inserted_and_refuses_a_taken_id(database_url: str) -> None:
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        await reset_tables(engine)
        repository = SqlPostRepository(engine)
        post = due_post(PostState.QUEUED, 0, request_id="req-1")
        added = await repository.add(post)
        assert added.created and added.post == post
        stored = await repository.get(post.id)
        # The same create again (same id, same request id), and the same request id with another id: the post.
        for retry in (copy.deepcopy(post), dataclasses.replace(post, id=new_id())):
            again = await repository.add(retry)
            assert not again.created and again.post == stored
        # The id with another request id, with none, or another owner's: taken, whoever asks.
        for taken in (
            dataclasses.replace(post, request_id="req-2"),
            dataclasses.replace(post, request_id=""),
            dataclasses.replace(post, owner="user-2"),
        ):
            with pytest.raises(PostIdTaken):
                await repository.add(taken)
        async with engine.connect() as connection:
            assert await connection.scalar(sa.text("SELECT count(*) FROM posts")) == 1
        assert await repository.get(post.id) == stored
    finally:
        await engine.dispose()


class RecordingDispatch:
    """The replica's real posting queue, with a record of what CreatePost asked of it."""

    def __init__(self, inner: PostDispatch) -> None:
        self._inner = inner
        self.reserved = 0
        self.started: list[str] = []
        self.unreserved = 0

    def reserve(self) -> Lease | None:
        lease = self._inner.reserve()
        self.reserved += lease is not None
        return lease

    def start_reserved(self, post: Post) -> None:
        self.started.append(post.id)
        self._inner.start_reserved(post)

    def unreserve(self) -> None:
        self.unreserved += 1
        self._inner.unreserve()


async def test_a_retried_create_with_a_chosen_id_starts_nothing_again(database_url: str, tmp_path: Path) -> None:
    tokens = FakeTokens()
    tokens.add(FakeConnection(id="outbox", owner="user-1", platform="outbox", account_id="user-1", token=""))
    slow = {"OAUTH_POSTING_POLL_INTERVAL": "3600"}  # only the creates' own starts publish anything
    async with posting_stack(database_url, tmp_path, tokens=tokens, env=slow) as stack:
        await asyncio.wait_for(stack.app.worker.queue.idle.wait(), timeout=30)
        dispatch = RecordingDispatch(stack.app.worker.queue)
        stack.app.services.dispatch = dispatch
        chosen = new_id()
        first = await stack.create(connection="connections/outbox", text="once", post_id=chosen, request_id="req-1")
        await stack.wait(first.name, {pb.POST_STATE_PUBLISHED}, timeout=10)
        # The retry carries the id of the post it made, which is published (or could be publishing elsewhere).
        again = await stack.create(connection="connections/outbox", text="once", post_id=chosen, request_id="req-1")
        assert again.name == first.name and again.state == pb.POST_STATE_PUBLISHED
        assert dispatch.started == [chosen]
        assert dispatch.reserved == 2 and dispatch.unreserved == 1  # the retry's slot given back
        async with stack.engine.connect() as connection:
            assert await connection.scalar(sa.text("SELECT count(*) FROM posts")) == 1
        assert (await stack.get(first.name)).attempts == 1


async def test_a_retried_create_with_a_chosen_id_wakes_no_queue(database_url: str, tmp_path: Path) -> None:
    tokens = FakeTokens()
    tokens.add(FakeConnection(id="outbox", owner="user-1", platform="outbox", account_id="user-1", token=""))
    async with posting_stack(database_url, tmp_path, tokens=tokens, worker=False) as stack:
        wakes: list[None] = []
        wake = stack.app.services.wake_worker

        def counted_wake() -> None:
            wakes.append(None)
            wake()

        stack.app.services.wake_worker = counted_wake
        chosen = new_id()
        for _ in range(2):
            await stack.create(connection="connections/outbox", text="once", post_id=chosen, request_id="req-1")
        assert len(wakes) == 1
        assert await stack.app.worker.run_once() == 1
