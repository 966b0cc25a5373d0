"""What the scheduler's SQL repositories share: the engine, sessions, the dialect's INSERT, the clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contentpipe.common.database import db_now, is_postgresql, session_factory
from contentpipe.scheduler.adapters.tables import jobs
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker


class SqlStoreBase:
    """Sessions and dialect of one database; every method of a subclass is one short transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions: async_sessionmaker[AsyncSession] = session_factory(engine)
        self._pg = is_postgresql(engine)

    def _insert(self, table: Any) -> Any:
        return postgresql.insert(table) if self._pg else sqlite.insert(table)

    async def now(self) -> datetime:
        async with self._sessions() as session:
            return await db_now(session)

    async def ping(self) -> None:
        async with self._sessions() as session:
            await db_now(session)
            await session.execute(select(func.count()).select_from(jobs).where(jobs.c.id == ""))
