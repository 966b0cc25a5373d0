"""Scheduler test fixtures: the fake pipelines service and an in-process scheduler on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
from contentpipe.common.database import run_migrations
from contentpipe.scheduler import bootstrap
from contentpipe.scheduler.adapters.tables import job_runs, jobs, notifications
from contentpipe.scheduler.bootstrap import Components
from contentpipe.scheduler.config import load_config
from sqlalchemy import delete, update

from tests.scheduler.fake_pipelines import FakePipelines
from tests.support import TEST_JWT_SECRET


@pytest.fixture
def fake_pipelines() -> Iterator[FakePipelines]:
    with FakePipelines() as fake:
        yield fake


@dataclass
class Harness:
    components: Components
    fake: FakePipelines

    async def now(self) -> datetime:
        return await self.components.store.now()

    async def set_next_fire(self, job_id: str, when: datetime) -> None:
        """What the scheduler would have left behind if it had been down since `when`."""
        async with self.components.engine.begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(next_fire_time=when))

    async def check_runs_now(self) -> None:
        """Make every active run due for its next look (poll/retry) without waiting."""
        async with self.components.engine.begin() as conn:
            past = datetime.fromisoformat("2000-01-01T00:00:00+00:00")
            await conn.execute(update(job_runs).where(job_runs.c.next_check_at.is_not(None)).values(next_check_at=past))


def scheduler_env(database_url: str, pipelines_address: str, **extra: str) -> dict[str, str]:
    return {
        "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
        "SCHEDULER_DATABASE_URL": database_url,
        "CONTENTPIPE_PIPELINES_ADDR": pipelines_address,
        "CONTENTPIPE_AUTO_MIGRATE": "0",
        **extra,
    }


async def clean_database(database_url: str) -> None:
    await run_migrations(database_url, bootstrap.MIGRATIONS, bootstrap.VERSION_TABLE)
    from contentpipe.common.database import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            for table in (job_runs, notifications, jobs):
                await conn.execute(delete(table))
    finally:
        await engine.dispose()


@pytest.fixture
async def harness(database_url: str, fake_pipelines: FakePipelines) -> AsyncIterator[Harness]:
    await clean_database(database_url)
    config = load_config(scheduler_env(database_url, fake_pipelines.address))
    components = bootstrap.build(config)
    try:
        yield Harness(components, fake_pipelines)
    finally:
        await components.close()
