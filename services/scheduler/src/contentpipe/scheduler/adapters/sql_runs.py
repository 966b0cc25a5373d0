"""Job runs: inserting fire-time records (batched, idempotent per job and nominal time), manual runs, listings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from contentpipe.common.batches import json_rows, rows_json
from contentpipe.common.database import db_now
from contentpipe.common.ids import new_id
from contentpipe.scheduler.adapters.sql_base import SqlStoreBase
from contentpipe.scheduler.adapters.sql_rows import (
    run_from_row,
    run_from_row_dict,
)
from contentpipe.scheduler.adapters.tables import job_runs, jobs
from contentpipe.scheduler.domain.model import (
    ACTIVE_RUN_STATES,
    Job,
    JobRun,
    JobRunState,
)
from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

# Columns of a new job run, for the batched insert (`json_rows`).
_RUN_COLUMNS = (
    "id",
    "job_id",
    "owner",
    "pipeline",
    "nominal_time",
    "state",
    "manual",
    "request_id",
    "trigger_time",
    "pipeline_run",
    "attempt",
    "message",
    "next_check_at",
    "lease_owner",
    "lease_expires_at",
)
_NEW_RUNS = json_rows({name: job_runs.c[name].type for name in _RUN_COLUMNS})
_INSERT_RUNS = (
    postgresql.insert(job_runs)
    .from_select(list(_RUN_COLUMNS), select(*_NEW_RUNS.c))
    .on_conflict_do_nothing(index_elements=["job_id", "nominal_time"])
    .returning(job_runs.c.job_id, job_runs.c.nominal_time)
)


class SqlJobRuns(SqlStoreBase):
    """The job-run records part of service_layer.store.SchedulerStore."""

    async def record_not_run(self, job: Job, times: Sequence[datetime], state: JobRunState, message: str) -> int:
        """Record fire times that did not run (e.g. missed during a pause); returns how many were new."""
        if not times:
            return 0
        async with self._sessions() as session, session.begin():
            rows = [
                {
                    "id": new_id(),
                    "job_id": job.id,
                    "owner": job.owner,
                    "pipeline": job.pipeline,
                    "nominal_time": t,
                    "state": int(state),
                    "manual": False,
                    "attempt": 0,
                    "pipeline_run": "",
                    "message": message,
                }
                for t in times
            ]
            inserted = await self._insert_runs(session, rows)
            if state in (JobRunState.MISSED, JobRunState.COALESCED):
                await session.execute(
                    update(jobs).where(jobs.c.id == job.id).values(missed_count=jobs.c.missed_count + len(inserted))
                )
            return len(inserted)

    async def _insert_runs(self, session: AsyncSession, rows: list[dict[str, Any]]) -> list[tuple[str, datetime]]:
        """INSERT … ON CONFLICT (job_id, nominal_time) DO NOTHING; returns the (job_id, nominal) we own."""
        if not rows:
            return []
        if self._pg:
            return await self._insert_runs_unnest(session, rows)
        # SQLite: one executemany that SQLAlchemy's "insertmanyvalues" turns into multi-row INSERT … RETURNING.
        statement = (
            self._insert(job_runs)
            .on_conflict_do_nothing(index_elements=["job_id", "nominal_time"])
            .returning(job_runs.c.job_id, job_runs.c.nominal_time)
        )
        connection = await session.connection()
        result = await connection.execute(statement, rows)
        return [(r[0], r[1]) for r in result.all()]

    async def _insert_runs_unnest(
        self, session: AsyncSession, rows: list[dict[str, Any]]
    ) -> list[tuple[str, datetime]]:
        """PostgreSQL: one statement of fixed text whatever the batch size (`json_rows`), so neither the
        client nor the server re-parses a new multi-row statement per batch."""
        result = await session.execute(_INSERT_RUNS, {"rows": rows_json(rows)})
        return [(r[0], r[1]) for r in result.all()]

    async def insert_manual_run(
        self, job: Job, *, request_id: str | None, lease_owner: str, lease_seconds: float
    ) -> tuple[JobRun, bool]:
        """A TriggerJob record at the DB's now; with a request id, a repeat returns the first record."""
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            if request_id:
                existing = (
                    await session.execute(
                        select(job_runs).where(job_runs.c.job_id == job.id, job_runs.c.request_id == request_id)
                    )
                ).first()
                if existing is not None:
                    return run_from_row(existing), False
            row = {
                "id": new_id(),
                "job_id": job.id,
                "owner": job.owner,
                "pipeline": job.pipeline,
                "nominal_time": now,
                "state": int(JobRunState.TRIGGERED),
                "manual": True,
                "request_id": request_id or None,
                "trigger_time": now,
                "pipeline_run": "",
                "attempt": 1,
                "message": "",
                "next_check_at": now,
                "lease_owner": lease_owner,
                "lease_expires_at": now + timedelta(seconds=lease_seconds),
            }
            await session.execute(job_runs.insert().values(row))
            await session.execute(
                update(jobs).where(jobs.c.id == job.id).values(triggered_count=jobs.c.triggered_count + 1)
            )
            return run_from_row_dict(row), True

    async def get_run(self, run_id: str) -> JobRun | None:
        async with self._sessions() as session:
            row = (await session.execute(select(job_runs).where(job_runs.c.id == run_id))).first()
            return None if row is None else run_from_row(row)

    async def list_runs(
        self, job_id: str, *, state: JobRunState | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[JobRun]:
        async with self._sessions() as session:
            query = select(job_runs).where(job_runs.c.job_id == job_id)
            if state is not None:
                query = query.where(job_runs.c.state == int(state))
            if after is not None:
                nominal, last_id = after
                query = query.where(
                    or_(
                        job_runs.c.nominal_time < nominal,
                        and_(job_runs.c.nominal_time == nominal, job_runs.c.id < last_id),
                    )
                )
            query = query.order_by(job_runs.c.nominal_time.desc(), job_runs.c.id.desc()).limit(limit)
            return [run_from_row(row) for row in (await session.execute(query)).all()]

    async def promote_buffered(self, job_ids: Sequence[str]) -> int:
        """A job's run ended: its BUFFERED fire time (if any, and nothing else running) becomes TRIGGERED."""
        if not job_ids:
            return 0
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            running = select(job_runs.c.job_id).where(
                job_runs.c.job_id.in_(list(job_ids)),
                job_runs.c.state.in_([int(s) for s in ACTIVE_RUN_STATES]),
            )
            result = await session.execute(
                update(job_runs)
                .where(
                    job_runs.c.job_id.in_(list(job_ids)),
                    job_runs.c.state == int(JobRunState.BUFFERED),
                    job_runs.c.job_id.not_in(running.scalar_subquery()),
                )
                .values(state=int(JobRunState.TRIGGERED), attempt=1, trigger_time=now, next_check_at=now)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
