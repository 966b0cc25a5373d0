"""What the scheduler's SQL repositories share: the engine, sessions, the dialect's INSERT, the clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from contentpipe.common.batches import BatchStatement, rows_json
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

    async def _execute_batch(
        self, session: AsyncSession, statement: BatchStatement, rows: Sequence[Mapping[str, Any]], **shared: Any
    ) -> None:
        """`statement` for `rows` (`shared`: parameters of every row)."""
        if self._pg:
            await session.execute(statement.postgresql, {"rows": rows_json(rows), **shared})
            return
        connection = await session.connection()
        await connection.execute(statement.each, [{**row, **shared} for row in rows])

    async def now(self) -> datetime:
        async with self._sessions() as session:
            return await db_now(session)

    async def ping(self) -> None:
        async with self._sessions() as session:
            await db_now(session)
            await session.execute(select(func.count()).select_from(jobs).where(jobs.c.id == ""))
