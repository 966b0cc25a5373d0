"""Database runtime on SQLite and PostgreSQL: per-service migrations, readiness, leases with the DB clock."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from contentpipe.common.database import (
    claim_rows,
    create_engine,
    database_ready,
    db_now,
    release_rows,
    run_migrations,
    session_factory,
    statement_session_factory,
    version_table_for,
)
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, case, insert, select, text

from tests.support.postgres import fresh_database

pytestmark = pytest.mark.integration
SERVICES = ["generation", "oauth", "pipelines", "scheduler"]


@pytest.fixture
def empty_database_url(database_url: str, database_backend: str) -> Iterator[str]:
    """A database nothing has migrated yet (the session's PostgreSQL database is shared with other tests)."""
    if database_backend == "sqlite":
        yield database_url
        return
    with fresh_database() as url:
        yield url


async def test_every_service_migrates_with_its_own_version_table(empty_database_url: str) -> None:
    database_url = empty_database_url
    engine = create_engine(database_url)
    try:
        for service in SERVICES:
            bootstrap = importlib.import_module(f"contentpipe.{service}.bootstrap")
            migrations: Path = bootstrap.MIGRATIONS
            table = version_table_for(service)
            assert not await database_ready(engine, table, migrations)
            await run_migrations(database_url, migrations, table)
            await run_migrations(database_url, migrations, table)  # idempotent
            assert await database_ready(engine, table, migrations)
            async with engine.connect() as conn:
                rows = (await conn.execute(text(f"SELECT version_num FROM {table}"))).all()  # noqa: S608
            head = ScriptDirectory(str(migrations)).get_current_head()
            assert head is not None
            assert rows == [(head,)]
    finally:
        await engine.dispose()


async def test_claim_rows_leases_each_row_to_one_worker(database_url: str) -> None:
    metadata = MetaData()
    suffix = abs(hash(database_url)) % 10_000
    jobs = Table(
        f"lease_test_{suffix}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("state", String(20), nullable=False),
        Column("lease_owner", String(100)),
        Column("lease_expires_at", DateTime(timezone=True)),
    )
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
            await conn.execute(insert(jobs), [{"id": i, "state": "PENDING"} for i in range(1, 6)])
        async with sessions() as session, session.begin():
            now = await db_now(session)
            first = await claim_rows(
                session,
                jobs,
                where=[jobs.c.state == "PENDING"],
                order_by=[jobs.c.id],
                limit=3,
                lease_owner="worker-a",
                lease_seconds=30,
                now=now,
            )
        async with sessions() as session, session.begin():
            second = await claim_rows(
                session,
                jobs,
                where=[jobs.c.state == "PENDING"],
                order_by=[jobs.c.id],
                limit=3,
                lease_owner="worker-b",
                lease_seconds=30,
                now=now,
            )
        assert sorted(r.id for r in first) == [1, 2, 3]
        assert sorted(r.id for r in second) == [4, 5]
        async with sessions() as session, session.begin():
            # After the leases expire, rows are claimable again.
            later = await claim_rows(
                session,
                jobs,
                where=[jobs.c.state == "PENDING"],
                order_by=[jobs.c.id],
                limit=10,
                lease_owner="worker-c",
                lease_seconds=30,
                now=now + timedelta(seconds=31),
            )
            assert sorted(r.id for r in later) == [1, 2, 3, 4, 5]
            assert await release_rows(session, jobs, [1, 2], lease_owner="worker-c") == 2
        async with sessions() as session:
            owners = dict((await session.execute(select(jobs.c.id, jobs.c.lease_owner))).all())
        assert owners[1] is None and owners[3] == "worker-c"
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()


async def test_claim_rows_sets_more_columns_from_the_row_as_it_was(database_url: str) -> None:
    metadata = MetaData()
    jobs = Table(
        f"lease_values_test_{abs(hash(database_url)) % 10_000}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("state", String(20), nullable=False),
        Column("tries", Integer, nullable=False),
        Column("lease_owner", String(100)),
        Column("lease_expires_at", DateTime(timezone=True)),
    )
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
            await conn.execute(
                insert(jobs), [{"id": 1, "state": "NEW", "tries": 0}, {"id": 2, "state": "BUSY", "tries": 4}]
            )
        starting = jobs.c.state == "NEW"  # read before the claim's own SET, in both columns
        async with sessions() as session, session.begin():
            claimed = await claim_rows(
                session,
                jobs,
                where=[jobs.c.state.in_(["NEW", "BUSY"])],
                order_by=[jobs.c.id],
                limit=10,
                lease_owner="worker-a",
                lease_seconds=30,
                values={
                    "state": case((starting, "BUSY"), else_=jobs.c.state),
                    "tries": case((starting, jobs.c.tries + 1), else_=jobs.c.tries),
                },
            )
        assert sorted((r.id, r.state, r.tries, r.lease_owner) for r in claimed) == [
            (1, "BUSY", 1, "worker-a"),
            (2, "BUSY", 4, "worker-a"),
        ]
        async with sessions() as session:
            stored = (await session.execute(select(jobs.c.id, jobs.c.state, jobs.c.tries).order_by(jobs.c.id))).all()
        assert [tuple(row) for row in stored] == [(1, "BUSY", 1), (2, "BUSY", 4)]
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()


async def test_a_unit_of_work_is_atomic_and_a_statement_commits_alone(database_url: str) -> None:
    # On PostgreSQL the pool's connections rest in autocommit; a unit of work must still commit or roll back whole.
    metadata = MetaData()
    notes = Table(f"atomic_test_{abs(hash(database_url)) % 10_000}", metadata, Column("id", Integer, primary_key=True))
    engine = create_engine(database_url)
    try:
        async with session_factory(engine).begin() as session:
            await session.run_sync(lambda sync: metadata.create_all(sync.connection()))
        with pytest.raises(RuntimeError):
            async with session_factory(engine).begin() as session:
                await session.execute(insert(notes), [{"id": 1}, {"id": 2}])
                raise RuntimeError("the unit of work fails after its writes")
        async with statement_session_factory(engine)() as session:
            await session.execute(insert(notes), {"id": 3})  # no commit: the statement is its own transaction
        async with session_factory(engine)() as session:
            stored = (await session.execute(select(notes.c.id))).scalars().all()
        assert stored == [3]
    finally:
        async with session_factory(engine).begin() as session:
            await session.run_sync(lambda sync: metadata.drop_all(sync.connection()))
        await engine.dispose()
