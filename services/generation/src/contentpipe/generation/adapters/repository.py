"""SQLAlchemy (Core) persistence of generations: one row each, with leases for the worker."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from contentpipe.common.batches import WriteBatcher, fenced_saves
from contentpipe.common.database import (
    claim_rows,
    fence,
    fenced_update,
    is_postgresql,
    lease_values,
    release_rows,
    renew_rows,
    session_factory,
    statement_session_factory,
    with_lease,
)
from contentpipe.common.workqueue import Lease
from contentpipe.generation.domain.model import (
    Asset,
    Generation,
    GenerationError,
    GenerationKind,
    GenerationOptions,
    GenerationState,
    PredictionRecord,
)
from contentpipe.generation.service_layer.ports import Added, GenerationIdTaken, ListQuery
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

T = TypeVar("T")

metadata = sa.MetaData()

generations = sa.Table(
    "generations",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("trace_context", sa.JSON, nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("predictions", sa.JSON, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=False),
    sa.Column("text", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finish_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("deadline_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("owner", "request_id", name="uq_generations_owner_request_id"),
    sa.Index("ix_generations_owner_create_time", "owner", "create_time", "id"),
    sa.Index("ix_generations_state_create_time", "state", "create_time"),
)

# Which generation holds each provider prediction: the primary key makes an adoption exclusive.
provider_predictions = sa.Table(
    "provider_predictions",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("prediction_id", sa.String(128), primary_key=True),
    sa.Column("generation_id", sa.String(32), nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_provider_predictions_generation_id", "generation_id"),
)

# The latest webhook delivery per provider prediction (Cog results arrive only by webhook, maybe while no worker runs).
provider_deliveries = sa.Table(
    "provider_deliveries",
    metadata,
    sa.Column("provider", sa.String(32), primary_key=True),
    sa.Column("prediction_id", sa.String(128), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
)

_DELIVERY_TERMINAL = ("succeeded", "failed", "canceled", "aborted", "refused")

_OPEN_STATES = [GenerationState.QUEUED.value, GenerationState.RUNNING.value]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _row_values(generation: Generation, now: datetime) -> dict[str, Any]:
    """The columns a save writes. The save that ends a generation also gives its lease back (no release follows)."""
    values = _saved_columns(generation, now)
    if generation.state.terminal:
        values.update(lease_owner=None, lease_expires_at=None)
    return values


def _saved_columns(generation: Generation, now: datetime) -> dict[str, Any]:
    return {
        "state": generation.state.value,
        "progress": generation.progress,
        "predictions": [p.to_dict() for p in generation.predictions],
        "outputs": [a.to_dict() for a in generation.outputs],
        "text": generation.text,
        "error": generation.error.to_dict() if generation.error else None,
        "start_time": generation.start_time,
        "finish_time": generation.finish_time,
        "update_time": now,
    }


def _from_row(row: Any) -> Generation:
    return Generation(
        id=row.id,
        owner=row.owner,
        kind=GenerationKind(row.kind),
        prompt=row.prompt,
        options=GenerationOptions.from_dict(row.options),
        provider=row.provider,
        model=row.model,
        create_time=_aware(row.create_time),  # type: ignore[arg-type]
        deadline_time=_aware(row.deadline_time),  # type: ignore[arg-type]
        request_id=row.request_id or "",
        trace_context=dict(row.trace_context or {}),
        state=GenerationState(row.state),
        progress=float(row.progress),
        predictions=[PredictionRecord.from_dict(p) for p in row.predictions or []],
        outputs=[Asset.from_dict(a) for a in row.outputs or []],
        text=row.text or "",
        error=GenerationError.from_dict(row.error) if row.error else None,
        start_time=_aware(row.start_time),
        finish_time=_aware(row.finish_time),
    )


class GroupCommit:
    """Runs write operations of concurrent callers in shared transactions, one at a time.

    Hundreds of generations finishing together then cost a few commits instead of hundreds, and SQLite sees a
    single writer per process (no "database is locked" from racing write transactions). Each caller still awaits
    the commit that contains its write, so nothing is acknowledged before it is durable.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        statements: async_sessionmaker[AsyncSession],
        max_batch: int = 200,
    ) -> None:
        self._sessions = sessions
        # A batch of one runs in autocommit: no BEGIN/COMMIT round trips around it (its operations need no
        # atomicity of their own; batching is what the shared transaction is for).
        self._statements = statements
        self._max_batch = max_batch
        self._pending: list[tuple[Callable[[AsyncSession], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, operation: Callable[[AsyncSession], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((operation, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="generation-group-commit")
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            results: list[Any] = []
            try:
                async with self._statements() if len(batch) == 1 else self._sessions.begin() as session:
                    for operation, _ in batch:
                        results.append(await operation(session))
            except Exception as exc:
                if len(batch) > 1:
                    # One bad write must not fail its neighbours: run each on its own.
                    for operation, future in batch:
                        await self._run_alone(operation, future)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _run_alone(
        self, operation: Callable[[AsyncSession], Awaitable[Any]], future: asyncio.Future[Any]
    ) -> None:
        try:
            async with self._statements() as session:
                result = await operation(session)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)


# The statements of every generation, built once (see contentpipe.common.database: constant statements).
_GET_GENERATION = sa.select(generations).where(generations.c.id == sa.bindparam("b_id"))


@functools.cache
def _insert_generation(on_postgresql: bool, leased: bool) -> Any:
    # RETURNING, not rowcount: psycopg reports rowcount -1 (truthy) for INSERT … ON CONFLICT DO NOTHING, so a
    # replayed request_id used to be answered with a new generation that was never stored.
    statement = (postgresql if on_postgresql else sqlite).insert(generations)
    if leased:
        statement = with_lease(statement, on_postgresql)
    return statement.on_conflict_do_nothing().returning(generations.c.id)


_SAVED_COLUMNS = (
    "state",
    "progress",
    "predictions",
    "outputs",
    "text",
    "error",
    "start_time",
    "finish_time",
    "update_time",
)
# A worker's saves, many in one statement on PostgreSQL (`WriteBatcher`): open generations only, as `_save_generation`.
_SAVE_GENERATIONS = fenced_saves(generations, _SAVED_COLUMNS, where=[generations.c.state.in_(_OPEN_STATES)])


@functools.cache
def _save_generation(on_postgresql: bool, fenced: bool) -> sa.Update:
    """Saves change open generations only (a terminal state is final); a worker's are also fenced by its lease."""
    if fenced:
        statement = fenced_update(generations, on_postgresql)
    else:
        statement = sa.update(generations).where(generations.c.id == sa.bindparam("fence_id"))
    return statement.where(generations.c.state.in_(_OPEN_STATES))


@functools.cache
def _hold_prediction(on_postgresql: bool) -> Any:
    # RETURNING: a row back means this insert took the prediction, so the usual case is one statement.
    statement = (postgresql if on_postgresql else sqlite).insert(provider_predictions)
    return statement.on_conflict_do_nothing().returning(provider_predictions.c.generation_id)


class SqlGenerationRepository:
    """Writes go through one group committer; saves are conditional on a non-terminal row.

    `leased_by(worker_id)` is the worker's view: its saves are also fenced by the lease, so a worker that lost a
    generation (it stalled past the lease, another replica took over) writes nothing and stops."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        _writes: GroupCommit | None = None,
        _saves: WriteBatcher[tuple[Generation, str], bool] | None = None,
        _fence: str | None = None,
    ) -> None:
        self._engine = engine
        self._sessions = session_factory(engine)
        self._statements = statement_session_factory(engine)  # one statement, one round trip
        self._writes = _writes or GroupCommit(self._sessions, self._statements)
        # PostgreSQL: a worker's saves of generations ending together are one statement (and one commit).
        self._saves = _saves or WriteBatcher(self._write_saves, name="generation-saves")
        self._fence = _fence
        self._postgresql = is_postgresql(engine)

    def leased_by(self, worker_id: str) -> SqlGenerationRepository:
        """The same repository (one group committer) with saves fenced by `worker_id`'s lease."""
        return SqlGenerationRepository(self._engine, _writes=self._writes, _saves=self._saves, _fence=worker_id)

    async def add(self, generation: Generation, lease: Lease | None = None) -> Added:
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "id": generation.id,
            "owner": generation.owner,
            "request_id": generation.request_id or None,
            "trace_context": generation.trace_context or None,
            "kind": generation.kind.value,
            "prompt": generation.prompt,
            "provider": generation.provider,
            "model": generation.model,
            "options": generation.options.to_dict(),
            "create_time": generation.create_time,
            "deadline_time": generation.deadline_time,
            **_row_values(generation, now),
        }

        if lease is not None:
            values.update(lease_values(lease.owner, lease.seconds, self._postgresql))
        statement = _insert_generation(self._postgresql, lease is not None)

        async def insert(session: AsyncSession) -> Added | None:
            inserted = await session.execute(statement, values)
            if inserted.first() is not None:
                return Added(generation, created=True)
            # The same request_id from the same user: answer with the first generation (AIP-155), whatever id this
            # create chose. Nothing found: the conflict was the id alone.
            row = None
            if generation.request_id:
                row = (
                    await session.execute(
                        sa.select(generations).where(
                            generations.c.owner == generation.owner, generations.c.request_id == generation.request_id
                        )
                    )
                ).first()
            return Added(_from_row(row), created=False) if row is not None else None

        # Raised out here, not in `insert`: a failing operation would make the group committer redo its whole batch.
        added = await self._writes.run(insert)
        if added is None:
            raise GenerationIdTaken(generation.id)
        return added

    async def get(self, generation_id: str) -> Generation | None:
        async with self._statements() as session:
            row = (await session.execute(_GET_GENERATION, {"b_id": generation_id})).first()
        return _from_row(row) if row is not None else None

    async def page(self, query: ListQuery) -> list[Generation]:
        c = generations.c
        statement = sa.select(generations).where(c.owner == query.owner)
        if query.state is not None:
            statement = statement.where(c.state == query.state.value)
        if query.kind is not None:
            statement = statement.where(c.kind == query.kind.value)
        if query.after is not None:
            time, last_id = query.after
            statement = statement.where(sa.or_(c.create_time < time, sa.and_(c.create_time == time, c.id < last_id)))
        statement = statement.order_by(c.create_time.desc(), c.id.desc()).limit(query.limit)
        async with self._statements() as session:
            rows = (await session.execute(statement)).all()
        return [_from_row(row) for row in rows]

    async def save(self, generation: Generation) -> bool:
        if self._fence is not None and self._postgresql:
            return await self._saves.submit((generation, self._fence))
        statement = _save_generation(self._postgresql, self._fence is not None)
        if self._fence is not None:
            where = fence(generation.id, self._fence, self._postgresql)
        else:
            where = {"fence_id": generation.id}
        params = {**where, **_row_values(generation, datetime.now(UTC))}

        async def update(session: AsyncSession) -> bool:
            result = await session.execute(statement, params)
            return bool(result.rowcount)  # type: ignore[attr-defined]

        return await self._writes.run(update)

    async def _write_saves(self, saves: list[tuple[Generation, str]]) -> list[bool]:
        now = datetime.now(UTC)
        rows = [
            _SAVE_GENERATIONS.row(
                generation.id, owner, _saved_columns(generation, now), release=generation.state.terminal
            )
            for generation, owner in saves
        ]
        async with self._statements() as session:
            return await _SAVE_GENERATIONS.write(session, rows)

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Generation]:
        async def claim(session: AsyncSession) -> list[Any]:
            return await claim_rows(
                session,
                generations,
                where=[generations.c.state.in_(_OPEN_STATES)],
                order_by=[generations.c.create_time],
                limit=limit,
                lease_owner=worker_id,
                lease_seconds=lease_seconds,
            )

        return [_from_row(row) for row in await self._writes.run(claim)]

    async def renew(self, worker_id: str, ids: Sequence[str], lease_seconds: float) -> set[str]:
        c = generations.c

        async def renew(session: AsyncSession) -> set[str]:
            held: set[str] = await renew_rows(
                session,
                generations,
                ids,
                lease_owner=worker_id,
                lease_seconds=lease_seconds,
                where=[c.state.in_(_OPEN_STATES)],
            )
            return held

        return await self._writes.run(renew)

    async def release(self, worker_id: str, ids: Sequence[str] | None = None) -> None:
        c = generations.c

        async def release(session: AsyncSession) -> None:
            chosen = ids
            if chosen is None:
                chosen = [row[0] for row in await session.execute(sa.select(c.id).where(c.lease_owner == worker_id))]
            await release_rows(session, generations, list(chosen), lease_owner=worker_id)

        await self._writes.run(release)

    async def hold_prediction(self, provider: str, prediction_id: str, generation_id: str) -> bool:
        c = provider_predictions.c
        values = {"provider": provider, "prediction_id": prediction_id, "generation_id": generation_id,
                  "create_time": datetime.now(UTC)}  # fmt: skip

        statement = _hold_prediction(self._postgresql)

        async def hold(session: AsyncSession) -> bool:
            if (await session.execute(statement, values)).first() is not None:
                return True
            # Held already: by this generation (a restart adopting its own prediction again) or by another one.
            holder = await session.scalar(
                sa.select(c.generation_id).where(c.provider == provider, c.prediction_id == prediction_id)
            )
            return bool(holder == generation_id)

        return await self._writes.run(hold)

    async def save_delivery(self, provider: str, prediction_id: str, prediction: dict[str, Any]) -> None:
        c = provider_deliveries.c
        status = str(prediction.get("status") or "unknown")
        key = (c.provider == provider, c.prediction_id == prediction_id)

        async def save(session: AsyncSession) -> None:
            stored = await session.scalar(sa.select(c.status).where(*key))
            values = {"status": status, "payload": prediction, "update_time": datetime.now(UTC)}
            if stored is None:
                dialect = postgresql if is_postgresql(session) else sqlite
                insert = dialect.insert(provider_deliveries).values(provider=provider, prediction_id=prediction_id,
                                                                     **values)  # fmt: skip
                await session.execute(
                    insert.on_conflict_do_update(index_elements=[c.provider, c.prediction_id], set_=values)
                )
            elif stored not in _DELIVERY_TERMINAL:
                await session.execute(sa.update(provider_deliveries).where(*key).values(values))

        await self._writes.run(save)

    async def delivery(self, provider: str, prediction_id: str) -> dict[str, Any] | None:
        c = provider_deliveries.c
        async with self._sessions() as session:
            payload = await session.scalar(
                sa.select(c.payload).where(c.provider == provider, c.prediction_id == prediction_id)
            )
        return dict(payload) if isinstance(payload, dict) else None
