"""SQLAlchemy storage of pipelines and runs (SQLite and PostgreSQL), with leases for the run engine."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from contentpipe.common.batches import WriteBatcher, fenced_saves
from contentpipe.common.database import (
    claim_rows,
    db_now,
    insert_row,
    is_postgresql,
    lease_values,
    release_rows,
    renew_rows,
    session_factory,
    statement_session_factory,
)
from contentpipe.common.errors import Unavailable
from contentpipe.common.workqueue import Lease
from contentpipe.pipelines import codec
from contentpipe.pipelines.domain.model import Pipeline, PipelineRun, PipelineState, RunState
from contentpipe.pipelines.service_layer.ports import LeaseLost, Page, RunFilter
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

P = ParamSpec("P")
T = TypeVar("T")


def _database_errors(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """A database that is down, locked past its busy timeout or restarting is transient: say so (UNAVAILABLE)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except OperationalError as exc:
            raise Unavailable(
                f"the pipelines database is unavailable ({type(exc.orig).__name__}); try again",
                reason="DATABASE_UNAVAILABLE",
                retry_after=1.0,
            ) from exc

    return wrapper


metadata = MetaData()

pipelines = Table(
    "pipelines",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("display_name", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("state", String(16), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("steps", JSON, nullable=False),
    Column("request_id", String(128), nullable=True),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("owner", "request_id", name="uq_pipelines_owner_request_id"),
    Index("ix_pipelines_owner_create", "owner", "create_time", "id"),
)

pipeline_runs = Table(
    "pipeline_runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("pipeline_id", String(32), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("pipeline_revision", Integer, nullable=False),
    Column("pipeline_display_name", String(200), nullable=False),
    Column("trigger", JSON, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("steps", JSON, nullable=False),
    Column("error", JSON, nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("trace_context", JSON, nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("start_time", DateTime(timezone=True), nullable=True),
    Column("finish_time", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("owner", "request_id", name="uq_pipeline_runs_owner_request_id"),
    Index("ix_pipeline_runs_owner_create", "owner", "create_time", "id"),
    Index("ix_pipeline_runs_pipeline_create", "pipeline_id", "create_time", "id"),
    Index("ix_pipeline_runs_state_lease", "state", "lease_expires_at"),
)

ACTIVE_STATES = (RunState.QUEUED.value, RunState.RUNNING.value)

# The statements of every run, built once (see contentpipe.common.database: constant statements).
_GET_PIPELINE = select(pipelines).where(pipelines.c.id == bindparam("b_id"), pipelines.c.owner == bindparam("b_owner"))
_GET_RUN = select(pipeline_runs).where(
    pipeline_runs.c.id == bindparam("b_id"), pipeline_runs.c.owner == bindparam("b_owner")
)
_GET_RUN_OF_PIPELINE = _GET_RUN.where(pipeline_runs.c.pipeline_id == bindparam("b_pipeline_id"))
_FIND_RUN_BY_REQUEST = select(pipeline_runs).where(
    pipeline_runs.c.owner == bindparam("b_owner"), pipeline_runs.c.request_id == bindparam("b_request_id")
)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite gives naive datetimes back; everything we store is UTC.
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _pipeline(row: Row[Any]) -> Pipeline:
    create_time = _aware(row.create_time)
    update_time = _aware(row.update_time)
    assert create_time is not None and update_time is not None
    return Pipeline(
        id=row.id,
        owner=row.owner,
        display_name=row.display_name,
        description=row.description,
        state=PipelineState(row.state),
        steps=codec.steps_from_json(row.steps),
        revision=row.revision,
        create_time=create_time,
        update_time=update_time,
    )


def _run(row: Row[Any]) -> PipelineRun:
    create_time = _aware(row.create_time)
    assert create_time is not None
    return PipelineRun(
        id=row.id,
        pipeline_id=row.pipeline_id,
        owner=row.owner,
        pipeline_revision=row.pipeline_revision,
        pipeline_display_name=row.pipeline_display_name,
        state=RunState(row.state),
        trigger=codec.trigger_from_json(row.trigger),
        definition=codec.steps_from_json(row.definition),
        steps=codec.step_runs_from_json(row.steps),
        create_time=create_time,
        request_id=row.request_id or "",
        error=codec.error_from_json(row.error),
        start_time=_aware(row.start_time),
        finish_time=_aware(row.finish_time),
        trace_context=dict(row.trace_context or {}),
        cancel_requested=bool(row.cancel_requested),
    )


def _progress(run: PipelineRun) -> dict[str, Any]:
    """The columns a worker writes while executing (never `cancel_requested`, which the API sets). The write that
    ends a run also gives its lease back (`FencedSaves`): no release statement follows it."""
    return {
        "state": run.state.value,
        "steps": codec.step_runs_to_json(run.steps),
        "error": codec.error_to_json(run.error),
        "start_time": run.start_time,
        "finish_time": run.finish_time,
    }


# Saves of runs, many in one statement on PostgreSQL (`WriteBatcher`).
_SAVE_RUNS = fenced_saves(pipeline_runs, ("state", "steps", "error", "start_time", "finish_time"))


def _cursor_filter(create_column: Any, id_column: Any, after: Mapping[str, Any] | None) -> list[Any]:
    if not after:
        return []
    last_time = datetime.fromisoformat(str(after["t"]))
    last_id = str(after["id"])
    return [or_(create_column < last_time, and_(create_column == last_time, id_column < last_id))]


def _page(rows: Sequence[Row[Any]], limit: int, convert: Any) -> Page:
    items = [convert(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit and items:
        last = items[-1]
        # The cursor format of contentpipe.common.pagination.keyset_token.
        next_cursor = {"t": last.create_time.isoformat(), "id": last.id}
    return Page(items=items, next_cursor=next_cursor)


class SqlPipelineRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)
        self._statements = statement_session_factory(engine)  # one statement, one round trip

    @_database_errors
    async def add(self, pipeline: Pipeline, request_id: str) -> Pipeline:
        values = {
            "id": pipeline.id,
            "owner": pipeline.owner,
            "display_name": pipeline.display_name,
            "description": pipeline.description,
            "state": pipeline.state.value,
            "revision": pipeline.revision,
            "steps": codec.steps_to_json(pipeline.steps),
            "request_id": request_id or None,
            "create_time": pipeline.create_time,
            "update_time": pipeline.update_time,
        }
        try:
            async with self._statements() as session:
                await session.execute(pipelines.insert().values(values))
            return pipeline
        except IntegrityError:
            async with self._statements() as session:
                row = (
                    await session.execute(
                        select(pipelines).where(
                            pipelines.c.owner == pipeline.owner, pipelines.c.request_id == request_id
                        )
                    )
                ).first()
            if row is None:
                raise
            return _pipeline(row)

    @_database_errors
    async def get(self, owner: str, pipeline_id: str) -> Pipeline | None:
        async with self._statements() as session:
            row = (await session.execute(_GET_PIPELINE, {"b_id": pipeline_id, "b_owner": owner})).first()
        return _pipeline(row) if row is not None else None

    @_database_errors
    async def list_page(
        self, owner: str, state: PipelineState | None, limit: int, after: Mapping[str, Any] | None
    ) -> Page:
        query = select(pipelines).where(
            pipelines.c.owner == owner, *_cursor_filter(pipelines.c.create_time, pipelines.c.id, after)
        )
        if state is not None:
            query = query.where(pipelines.c.state == state.value)
        query = query.order_by(pipelines.c.create_time.desc(), pipelines.c.id.desc()).limit(limit + 1)
        async with self._statements() as session:
            rows = (await session.execute(query)).all()
        return _page(rows, limit, _pipeline)

    @_database_errors
    async def replace(self, pipeline: Pipeline, expected_revision: int) -> bool:
        async with self._statements() as session:
            result = await session.execute(
                update(pipelines)
                .where(
                    pipelines.c.id == pipeline.id,
                    pipelines.c.owner == pipeline.owner,
                    pipelines.c.revision == expected_revision,
                )
                .values(
                    display_name=pipeline.display_name,
                    description=pipeline.description,
                    state=pipeline.state.value,
                    steps=codec.steps_to_json(pipeline.steps),
                    revision=pipeline.revision,
                    update_time=pipeline.update_time,
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    @_database_errors
    async def delete(self, owner: str, pipeline_id: str, expected_revision: int | None) -> bool:
        async with self._sessions.begin() as session:
            query = delete(pipelines).where(pipelines.c.id == pipeline_id, pipelines.c.owner == owner)
            if expected_revision is not None:
                query = query.where(pipelines.c.revision == expected_revision)
            result = await session.execute(query)
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            await session.execute(delete(pipeline_runs).where(pipeline_runs.c.pipeline_id == pipeline_id))
            return True


class SqlRunRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)
        self._statements = statement_session_factory(engine)  # one statement, one round trip
        self._postgresql = is_postgresql(engine)
        # Executors of concurrent runs save at the same moments (a step ends, the next starts): one statement, and
        # one commit, for all of them.
        self._saves = WriteBatcher(self._write_saves, name="pipelines-run-saves")

    @_database_errors
    async def add(self, run: PipelineRun, lease: Lease | None = None) -> PipelineRun:
        values: dict[str, Any] = {
            "id": run.id,
            "pipeline_id": run.pipeline_id,
            "owner": run.owner,
            "pipeline_revision": run.pipeline_revision,
            "pipeline_display_name": run.pipeline_display_name,
            "trigger": codec.trigger_to_json(run.trigger),
            "definition": codec.steps_to_json(run.definition),
            "request_id": run.request_id or None,
            "trace_context": dict(run.trace_context),
            "cancel_requested": False,
            "create_time": run.create_time,
            **_progress(run),
        }
        if lease is not None:
            values.update(lease_values(lease.owner, lease.seconds, self._postgresql))
        try:
            async with self._statements() as session:
                await session.execute(insert_row(pipeline_runs, self._postgresql, lease is not None), values)
            return run
        except IntegrityError:
            existing = await self.find_by_request_id(run.owner, run.request_id) if run.request_id else None
            if existing is None:
                raise
            return existing

    @_database_errors
    async def get(self, owner: str, pipeline_id: str | None, run_id: str) -> PipelineRun | None:
        params = {"b_id": run_id, "b_owner": owner}
        query = _GET_RUN
        if pipeline_id is not None:
            query, params["b_pipeline_id"] = _GET_RUN_OF_PIPELINE, pipeline_id
        async with self._statements() as session:
            row = (await session.execute(query, params)).first()
        return _run(row) if row is not None else None

    @_database_errors
    async def find_by_request_id(self, owner: str, request_id: str) -> PipelineRun | None:
        async with self._statements() as session:
            row = (await session.execute(_FIND_RUN_BY_REQUEST, {"b_owner": owner, "b_request_id": request_id})).first()
        return _run(row) if row is not None else None

    @_database_errors
    async def list_page(self, where: RunFilter, limit: int, after: Mapping[str, Any] | None) -> Page:
        table = pipeline_runs
        query = select(table).where(
            table.c.owner == where.owner, *_cursor_filter(table.c.create_time, table.c.id, after)
        )
        if where.pipeline_id is not None:
            query = query.where(table.c.pipeline_id == where.pipeline_id)
        if where.state is not None:
            query = query.where(table.c.state == where.state.value)
        if where.created_after is not None:
            query = query.where(table.c.create_time >= where.created_after)
        if where.created_before is not None:
            query = query.where(table.c.create_time < where.created_before)
        query = query.order_by(table.c.create_time.desc(), table.c.id.desc()).limit(limit + 1)
        async with self._statements() as session:
            rows = (await session.execute(query)).all()
        return _page(rows, limit, _run)

    @_database_errors
    async def save(self, run: PipelineRun, lease_owner: str) -> None:
        if not await self._saves.submit((run, lease_owner)):
            raise LeaseLost(run.id)

    async def _write_saves(self, saves: list[tuple[PipelineRun, str]]) -> list[bool]:
        """Write `saves` (a run and the lease owner its worker is); whether each was written."""
        rows = [_SAVE_RUNS.row(run.id, owner, _progress(run), release=run.state.terminal) for run, owner in saves]
        # SQLite: one transaction for several (one writer at a time).
        async with self._statements() if self._postgresql or len(saves) == 1 else self._sessions.begin() as session:
            return await _SAVE_RUNS.write(session, rows)

    @_database_errors
    async def queue_stats(self) -> tuple[int, datetime | None]:
        """QUEUED runs and the oldest one's create time, in one aggregate query (for the queue gauges)."""
        c = pipeline_runs.c
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(func.count(), func.min(c.create_time)).where(c.state == RunState.QUEUED.value)
                )
            ).one()
        return int(row[0]), _aware(row[1])

    async def claim(
        self,
        lease_owner: str,
        limit: int,
        lease_seconds: float,
        *,
        exclude_owners: Sequence[str] = (),
        run_id: str | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[PipelineRun]:
        where: list[Any] = [pipeline_runs.c.state.in_(ACTIVE_STATES)]
        if exclude_owners:
            where.append(pipeline_runs.c.owner.not_in(list(exclude_owners)))
        if run_id is not None:
            where.append(pipeline_runs.c.id == run_id)
        if exclude_ids:
            where.append(pipeline_runs.c.id.not_in(list(exclude_ids)))
        async with self._statements() as session:
            rows = await claim_rows(
                session,
                pipeline_runs,
                where=where,
                order_by=[pipeline_runs.c.create_time, pipeline_runs.c.id],
                limit=limit,
                lease_owner=lease_owner,
                lease_seconds=lease_seconds,
            )
        return sorted((_run(row) for row in rows), key=lambda run: (run.create_time, run.id))

    @_database_errors
    async def renew(self, run_ids: Sequence[str], lease_owner: str, lease_seconds: float) -> set[str]:
        if not run_ids:
            return set()
        async with self._sessions.begin() as session:
            now = await db_now(session)
            held = await renew_rows(
                session, pipeline_runs, list(run_ids), lease_owner=lease_owner, lease_seconds=lease_seconds, now=now
            )
        return {str(run_id) for run_id in held}

    @_database_errors
    async def release(self, run_ids: Sequence[str] | None, lease_owner: str) -> None:
        if run_ids is not None and not run_ids:
            return
        async with self._statements() as session:  # nothing to keep atomic: our own leases, given back
            if run_ids is None:
                c = pipeline_runs.c
                run_ids = [row.id for row in await session.execute(select(c.id).where(c.lease_owner == lease_owner))]
            await release_rows(session, pipeline_runs, list(run_ids), lease_owner=lease_owner)

    @_database_errors
    async def request_cancel(self, owner: str, run_id: str) -> None:
        async with self._statements() as session:
            await session.execute(
                update(pipeline_runs)
                .where(pipeline_runs.c.id == run_id, pipeline_runs.c.owner == owner)
                .values(cancel_requested=True)
            )

    @_database_errors
    async def cancel_requested(self, run_id: str) -> bool:
        async with self._statements() as session:
            value = (
                await session.execute(select(pipeline_runs.c.cancel_requested).where(pipeline_runs.c.id == run_id))
            ).scalar_one_or_none()
        # A deleted run (its pipeline was deleted) is as good as cancelled.
        return value is None or bool(value)

    @_database_errors
    async def cancel_requested_among(self, run_ids: Sequence[str]) -> set[str]:
        if not run_ids:
            return set()
        async with self._statements() as session:
            rows = (
                await session.execute(
                    select(pipeline_runs.c.id, pipeline_runs.c.cancel_requested).where(
                        pipeline_runs.c.id.in_(list(run_ids))
                    )
                )
            ).all()
        present = {row.id: bool(row.cancel_requested) for row in rows}
        # A deleted run (its pipeline was deleted) is as good as cancelled.
        return {run_id for run_id in run_ids if present.get(run_id, True)}

    @_database_errors
    async def cancel_runs_of_pipeline(self, pipeline_id: str) -> list[PipelineRun]:
        async with self._sessions.begin() as session:
            await session.execute(
                update(pipeline_runs)
                .where(pipeline_runs.c.pipeline_id == pipeline_id, pipeline_runs.c.state.in_(ACTIVE_STATES))
                .values(cancel_requested=True)
            )
            rows = (
                await session.execute(
                    select(pipeline_runs).where(
                        pipeline_runs.c.pipeline_id == pipeline_id, pipeline_runs.c.state.in_(ACTIVE_STATES)
                    )
                )
            ).all()
        return [_run(row) for row in rows]
