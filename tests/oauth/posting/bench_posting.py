"""Posting-queue throughput on PostgreSQL next to a bare claim-and-complete loop, in one run.

    uv run python -m tests.oauth.posting.bench_posting [--posts 2000] [--workers 4]

On one fresh database: N queued posts are published by W worker processes running the real PostingWorker
(SqlPostRepository leases, fenced saves, the in-flight mark before the create call, rate-limit and cap checks) to a
zero-latency publisher; then the same N rows are claimed and completed by W processes running only `claim_rows` +
one UPDATE per row. Prints posts/s for both and their ratio. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from contentpipe.common.cli import settle_heap
from contentpipe.common.database import claim_rows, create_engine, db_now, run_migrations, session_factory
from contentpipe.common.ids import new_id
from contentpipe.common.workqueue import QueueSettings
from contentpipe.oauth.adapters.post_repository import SqlPostRepository, SqlRateLimitStore, posts
from contentpipe.oauth.domain.posts import Platform, Post, PostOptions
from contentpipe.oauth.service_layer.posting_ports import PublishContext, Published, Reconciliation, Verdict
from contentpipe.oauth.service_layer.posting_worker import PostingWorker, PostingWorkerSettings

from tests.fakes.publishing_tokens import FakeConnection, FakeTokens
from tests.oauth.posting.harness import MIGRATIONS, VERSION_TABLE
from tests.support.postgres import create_database, drop_database

BATCH = 8


class InstantPublisher:
    """A platform that answers at once, so what is measured is the queue."""

    platform = Platform.OUTBOX

    async def publish(self, ctx: PublishContext) -> Published:
        await ctx.journal.arm()
        await ctx.journal.created(ctx.post.id, "")
        return Published(ctx.post.id, "")

    async def reconcile(self, ctx: PublishContext) -> Reconciliation:
        return Reconciliation(Verdict.PUBLISHED, Published(ctx.post.id, ""))


async def _remaining(engine: object) -> int:
    async with engine.connect() as connection:  # type: ignore[attr-defined]
        return int(
            (
                await connection.execute(
                    sa.select(sa.func.count()).select_from(posts).where(posts.c.state != "PUBLISHED")
                )
            ).scalar_one()
        )


async def _worker(url: str, index: int) -> None:
    settle_heap()  # as `contentpipe-oauth serve` does once its modules are imported
    engine = create_engine(url)
    tokens = FakeTokens()
    tokens.add(FakeConnection(id="outbox", owner="bench", platform="outbox", account_id="bench", token=""))
    worker = PostingWorker(
        SqlPostRepository(engine),
        tokens,
        {Platform.OUTBOX: InstantPublisher()},
        SqlRateLimitStore(engine),
        PostingWorkerSettings(
            QueueSettings(
                owner=f"bench-{index}", lease_seconds=30, poll_interval=0.05, concurrency=BATCH, claim_batch=BATCH
            )
        ),
    )
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 600
    while await _remaining(engine) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await engine.dispose()


async def _bare(url: str, index: int) -> None:
    engine = create_engine(url)
    sessions = session_factory(engine)
    while True:
        async with sessions.begin() as session:
            now = await db_now(session)
            rows = await claim_rows(
                session,
                posts,
                where=[posts.c.state == "QUEUED"],
                order_by=[posts.c.id],
                limit=BATCH,
                lease_owner=f"bare-{index}",
                lease_seconds=30,
                now=now,
            )
        if not rows:
            break
        for row in rows:
            async with sessions.begin() as session:
                await session.execute(
                    sa.update(posts)
                    .where(posts.c.id == row.id)
                    .values(state="PUBLISHED", lease_owner=None, lease_expires_at=None)
                )
    await engine.dispose()


def _run(kind: str, url: str, index: int) -> None:
    asyncio.run(_worker(url, index) if kind == "worker" else _bare(url, index))


async def _fill(url: str, count: int) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(sa.delete(posts))
    repository = SqlPostRepository(engine)
    now = datetime.now(UTC)
    for _ in range(count):
        await repository.add(
            Post(
                id=new_id(),
                owner="bench",
                connection_id="outbox",
                platform=Platform.OUTBOX,
                text="bench",
                media=(),
                options=PostOptions(),
                create_time=now,
                account_id="bench",
                next_attempt_time=now,
                update_time=now,
            )
        )
    await engine.dispose()


def _timed(kind: str, url: str, workers: int) -> float:
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    processes = [context.Process(target=_run, args=(kind, url, i)) for i in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=900)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    name, url = create_database()
    try:
        asyncio.run(run_migrations(url, MIGRATIONS, VERSION_TABLE))
        asyncio.run(_fill(url, args.posts))
        queue = _timed("worker", url, args.workers)
        asyncio.run(_fill(url, args.posts))
        bare = _timed("bare", url, args.workers)
    finally:
        drop_database(name)
    print(
        f"posting queue ({args.workers} worker processes, real PostingWorker): "
        f"{args.posts / queue:.0f} posts/s ({queue:.2f} s)"
    )
    print(f"bare claim-and-complete ({args.workers} processes): {args.posts / bare:.0f} rows/s ({bare:.2f} s)")
    print(f"ratio posting/bare: {bare / queue:.2f}")


if __name__ == "__main__":
    main()
