"""Writes of many rows as one statement, and concurrent callers' writes gathered into one flush.

On PostgreSQL each statement costs a round trip, the driver's and SQLAlchemy's per-statement work, and (outside a
transaction) a commit that waits for the WAL to reach the disk. A batch of rows sent as one JSON document
(`json_rows`) is one of each, whatever its size. `WriteBatcher` gathers what concurrent callers write while the
previous flush is in flight, so a busy process writes in batches and an idle one still writes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from contentpipe.common.database import fence, fenced_update, is_postgresql, lease_held
from sqlalchemy import (
    Boolean,
    Executable,
    Table,
    Text,
    bindparam,
    case,
    cast,
    column,
    func,
    null,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningUpdate, Update
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


def json_rows(columns: Mapping[str, TypeEngine[Any]]) -> TableValuedAlias:
    """PostgreSQL: `jsonb_to_recordset(CAST(:rows AS jsonb)) AS u(a t, …)`, a batch of rows as one JSON document
    (the parameter `rows`, see `rows_json`); `columns` maps each name to its type (a JSON column takes the value
    nested in the document; a JSON null is SQL NULL).

    A statement over it has the same text whatever the batch size, so it is parsed and planned once, and a batch
    is one statement instead of one per row (an executemany). JSON rather than one array per column: the driver
    adapts array elements one by one in Python (500 rows of 15 columns: ~14 ms of CPU), orjson in Rust (~0.5 ms).
    """
    rows = func.jsonb_to_recordset(cast(bindparam("rows", type_=Text), JSONB))
    return rows.table_valued(*(column(name, type_) for name, type_ in columns.items())).render_derived(
        name="u", with_types=True
    )


@dataclass(frozen=True, slots=True)
class BatchStatement:
    """One statement for a batch of rows: over `json_rows` on PostgreSQL, an executemany of `each` elsewhere."""

    postgresql: Executable
    each: Executable


def batch_statement(
    build: Callable[[Callable[[str], Any]], Executable], columns: Mapping[str, TypeEngine[Any]]
) -> BatchStatement:
    """`build(value)` written once for both backends: `value(name)` is a column of `json_rows(columns)` on
    PostgreSQL and a bound parameter of the executemany elsewhere."""
    rows = json_rows(columns)
    return BatchStatement(
        postgresql=build(lambda name: rows.c[name]),
        each=build(lambda name: bindparam(name, type_=columns[name])),
    )


@dataclass(frozen=True, slots=True)
class FencedSaves:
    """The saves of many leased rows of `table`, written together: each row's `columns` only while its worker still
    holds the row's lease (`lease_held`) and `where` holds; a save that ends the work gives the lease back in the
    same write. Build with `fenced_saves`, make each row with `row`, write them with `write`."""

    table: Table
    columns: frozenset[str]
    # PostgreSQL: one `UPDATE … FROM jsonb_to_recordset` against the database's clock, RETURNING the rows written.
    postgresql: ReturningUpdate[Any]
    # Elsewhere (SQLite): the same fenced UPDATE, one row at a time.
    each: Update

    def row(self, row_id: str, lease_owner: str, values: Mapping[str, Any], *, release: bool) -> dict[str, Any]:
        """One save: `values` must name exactly the `columns` (one left out would be written as NULL, one not
        listed would not be written)."""
        if values.keys() != self.columns:
            raise ValueError(f"a save of {self.table.name} writes {sorted(self.columns)}, not {sorted(values)}")
        return {"b_id": row_id, "b_owner": lease_owner, "b_release": release, **values}

    async def write(self, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Write `rows` in `session`; whether each was written (False: its lease is gone, or `where` failed)."""
        if is_postgresql(session):
            written = set((await session.execute(self.postgresql, {"rows": rows_json(rows)})).scalars())
            return [row["b_id"] in written for row in rows]
        outcomes = []
        for row in rows:
            values = {name: row[name] for name in self.columns}
            if row["b_release"]:
                values.update(lease_owner=None, lease_expires_at=None)
            result = await session.execute(self.each, {**fence(row["b_id"], row["b_owner"], False), **values})
            outcomes.append(bool(result.rowcount))  # type: ignore[attr-defined]
        return outcomes


def fenced_saves(table: Table, columns: Sequence[str], *, where: Sequence[ColumnElement[bool]] = ()) -> FencedSaves:
    """`FencedSaves` of `columns` of `table` (which has `id`, `lease_owner` and `lease_expires_at`)."""
    rows = json_rows(
        {
            "b_id": table.c.id.type,
            "b_owner": table.c.lease_owner.type,
            "b_release": Boolean(),
            **{name: table.c[name].type for name in columns},
        }
    )
    release = rows.c.b_release
    postgresql = (
        update(table)
        .where(table.c.id == rows.c.b_id, lease_held(table, rows.c.b_owner, func.now()), *where)
        .values(
            **{name: rows.c[name] for name in columns},
            lease_owner=case((release, null()), else_=table.c.lease_owner),
            lease_expires_at=case((release, null()), else_=table.c.lease_expires_at),
        )
        .returning(table.c.id)
    )
    return FencedSaves(table, frozenset(columns), postgresql, fenced_update(table, False).where(*where))


def rows_json(rows: Sequence[Mapping[str, Any]]) -> str:
    """The `rows` parameter of `json_rows`: timestamps in ISO 8601 with their offset, exact to the microsecond (a
    naive one is written as UTC, the time zone of every session, as the driver's own parameters are read).

    orjson, not json.dumps: the standard encoder calls back into Python for every datetime, ~7-15 µs a row of the
    scheduler's batches (11 % of a dispatching worker's CPU); orjson writes datetimes itself, ~1 µs a row.
    """
    return orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC).decode()


class WriteBatcher(Generic[ItemT, ResultT]):
    """Concurrent callers' writes flushed together, one flush at a time (a group commit).

    `write(items)` writes a batch and returns one result per item, in order. A caller's item joins the next flush
    and the caller awaits that flush: nothing is acknowledged before it is written. A lone caller is flushed at
    once, so the batcher adds no wait; items arriving during a flush form the next batch. When a batch of several
    fails, each item is written again on its own, so one bad row does not fail its neighbours.
    """

    def __init__(
        self, write: Callable[[list[ItemT]], Awaitable[Sequence[ResultT]]], *, name: str, max_batch: int = 200
    ) -> None:
        self._write = write
        self._name = name
        self._max_batch = max_batch
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: ItemT) -> ResultT:
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=self._name)
        # A cancelled caller does not take its neighbours' write down with it: the flush goes on.
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        batch: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                await self._write_batch(batch)
        except BaseException as exc:
            # Cancelled (the process stops) or a bug: no caller may wait for a flush that will not come.
            for _, future in [*batch, *self._pending]:
                _settle(future, error=exc if isinstance(exc, Exception) else asyncio.CancelledError())
            self._pending = []
            raise

    async def _write_batch(self, batch: list[tuple[ItemT, asyncio.Future[ResultT]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            for item, future in batch:
                try:
                    (result,) = await self._write([item])
                except Exception as alone:
                    _settle(future, error=alone)
                else:
                    _settle(future, result=result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
