"""The scheduler's repository on SQLAlchemy (PostgreSQL and SQLite): jobs, job runs, notifications.

Batch-minded: claiming, recording and updating happen in a few statements per batch, not per job.
Every method is one short transaction; "now" always comes from the database clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from contentpipe.common.database import claim_rows, db_now, is_postgresql, release_rows, session_factory
from contentpipe.common.errors import Aborted, AlreadyExists, NotFound
from contentpipe.common.ids import new_id
from contentpipe.scheduler.adapters.tables import job_runs, jobs, notifications
from contentpipe.scheduler.domain.model import (
    ACTIVE_RUN_STATES,
    Job,
    JobRun,
    JobRunState,
    JobState,
    JobStats,
    Notification,
    NotificationKind,
)
from contentpipe.scheduler.domain.policies import MISFIRE_GRACE, Backoff, Decision, MisfirePolicy, OverlapPolicy
from contentpipe.scheduler.service_layer.store import (
    ClaimedRun,
    DueRecord,
    FailureCount,
    NotificationDraft,
    RunChange,
)
from sqlalchemy import and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

# Columns of a new job run and their PostgreSQL types, for the `unnest` insert.
_RUN_COLUMNS = {
    "id": "varchar",
    "job_id": "varchar",
    "owner": "varchar",
    "pipeline": "varchar",
    "nominal_time": "timestamptz",
    "state": "integer",
    "manual": "boolean",
    "request_id": "varchar",
    "trigger_time": "timestamptz",
    "pipeline_run": "varchar",
    "attempt": "integer",
    "message": "text",
    "next_check_at": "timestamptz",
    "lease_owner": "varchar",
    "lease_expires_at": "timestamptz",
}


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _delta(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def job_from_row(row: Any, now: datetime | None = None) -> Job:
    m = row._mapping
    overdue = bool(
        now is not None
        and m["state"] == JobState.ACTIVE
        and m["next_fire_time"] is not None
        and m["next_fire_time"] < now - MISFIRE_GRACE
    )
    return Job(
        id=m["id"],
        owner=m["owner"],
        pipeline=m["pipeline"],
        display_name=m["display_name"],
        cron_expression=m["cron_expression"],
        time_zone=m["time_zone"],
        run_time=m["run_time"],
        start_time=m["start_time"],
        end_time=m["end_time"],
        state=JobState(m["state"]),
        state_reason=m["state_reason"],
        state_reason_code=m["state_reason_code"],
        next_fire_time=m["next_fire_time"],
        last_fire_time=m["last_fire_time"],
        last_outcome=m["last_outcome"],
        consecutive_failures=m["consecutive_failures"],
        max_retries=m["max_retries"],
        backoff=Backoff(
            initial=timedelta(seconds=m["initial_backoff_s"]),
            multiplier=m["backoff_multiplier"],
            maximum=timedelta(seconds=m["max_backoff_s"]),
        ),
        misfire_policy=MisfirePolicy(m["misfire_policy"]),
        max_catch_up_runs=m["max_catch_up_runs"],
        catch_up_window=_delta(m["catch_up_window_s"]),
        overlap_policy=OverlapPolicy(m["overlap_policy"]),
        period=_delta(m["period_s"]),
        paused_at=m["paused_at"],
        stats=JobStats(
            last_lag=_delta(m["last_lag_s"]),
            missed_count=m["missed_count"],
            skipped_count=m["skipped_count"],
            triggered_count=m["triggered_count"],
            overdue=overdue,
        ),
        create_time=m["create_time"],
        update_time=m["update_time"],
        version=m["version"],
    )


def _job_values(job: Job) -> dict[str, Any]:
    """Columns a create or an update writes (counters and leases are managed elsewhere)."""
    return {
        "owner": job.owner,
        "pipeline": job.pipeline,
        "display_name": job.display_name,
        "cron_expression": job.cron_expression,
        "time_zone": job.time_zone,
        "run_time": job.run_time,
        "start_time": job.start_time,
        "end_time": job.end_time,
        "state": int(job.state),
        "state_reason": job.state_reason,
        "state_reason_code": job.state_reason_code,
        "next_fire_time": job.next_fire_time,
        "consecutive_failures": job.consecutive_failures,
        "max_retries": job.max_retries,
        "initial_backoff_s": job.backoff.initial.total_seconds(),
        "backoff_multiplier": job.backoff.multiplier,
        "max_backoff_s": job.backoff.maximum.total_seconds(),
        "misfire_policy": int(job.misfire_policy),
        "max_catch_up_runs": job.max_catch_up_runs,
        "catch_up_window_s": _seconds(job.catch_up_window),
        "overlap_policy": int(job.overlap_policy),
        "period_s": _seconds(job.period),
        "paused_at": job.paused_at,
    }


def run_from_row(row: Any) -> JobRun:
    m = row._mapping
    return JobRun(
        id=m["id"],
        job_id=m["job_id"],
        nominal_time=m["nominal_time"],
        state=JobRunState(m["state"]),
        trigger_time=m["trigger_time"],
        pipeline_run=m["pipeline_run"],
        attempt=m["attempt"],
        next_retry_time=m["next_retry_time"],
        finish_time=m["finish_time"],
        message=m["message"],
        manual=m["manual"],
    )


def notification_from_row(row: Any) -> Notification:
    m = row._mapping
    return Notification(
        id=m["id"],
        owner=m["owner"],
        kind=NotificationKind(m["kind"]),
        title=m["title"],
        message=m["message"],
        job=m["job"],
        pipeline_run=m["pipeline_run"],
        connection=m["connection"],
        create_time=m["create_time"],
        acknowledge_time=m["acknowledge_time"],
        deliver_time=m["deliver_time"],
    )


class SqlSchedulerStore:
    """Implements service_layer.store.SchedulerStore."""

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

    # ------------------------------------------------------------------ jobs

    async def insert_job(self, job: Job, *, request_id: str | None) -> Job:
        async with self._sessions() as session, session.begin():
            now = job.create_time or await db_now(session)
            if request_id:
                existing = (
                    await session.execute(
                        select(jobs).where(jobs.c.owner == job.owner, jobs.c.create_request_id == request_id)
                    )
                ).first()
                if existing is not None:
                    return job_from_row(existing, now)
            values = _job_values(job) | {
                "id": job.id,
                "create_request_id": request_id or None,
                "create_time": now,
                "update_time": now,
                "version": 1,
                "last_outcome": 0,
                "deactivations": 0,
                "failure_notified": False,
                "missed_count": 0,
                "skipped_count": 0,
                "triggered_count": 0,
                "state_reason": job.state_reason,
            }
            try:
                async with session.begin_nested():
                    await session.execute(jobs.insert().values(values))
            except IntegrityError:
                raise AlreadyExists(f"job jobs/{job.id} already exists", reason="JOB_EXISTS") from None
            row = (await session.execute(select(jobs).where(jobs.c.id == job.id))).one()
            return job_from_row(row, now)

    async def get_job(self, job_id: str) -> Job | None:
        async with self._sessions() as session:
            now = await db_now(session)
            row = (await session.execute(select(jobs).where(jobs.c.id == job_id))).first()
            return None if row is None else job_from_row(row, now)

    async def list_jobs(
        self,
        *,
        owner: str,
        pipeline: str | None,
        state: JobState | None,
        overdue_only: bool,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Job]:
        async with self._sessions() as session:
            now = await db_now(session)
            query = select(jobs).where(jobs.c.owner == owner)
            if pipeline:
                query = query.where(jobs.c.pipeline == pipeline)
            if state is not None:
                query = query.where(jobs.c.state == int(state))
            if overdue_only:
                query = query.where(
                    jobs.c.state == int(JobState.ACTIVE),
                    jobs.c.next_fire_time.is_not(None),
                    jobs.c.next_fire_time < now - MISFIRE_GRACE,
                )
            if after is not None:
                created, last_id = after
                query = query.where(
                    or_(jobs.c.create_time < created, and_(jobs.c.create_time == created, jobs.c.id < last_id))
                )
            query = query.order_by(jobs.c.create_time.desc(), jobs.c.id.desc()).limit(limit)
            return [job_from_row(row, now) for row in (await session.execute(query)).all()]

    async def save_job(self, job: Job, *, expected_version: int) -> Job:
        """Write a changed job if nobody changed it meanwhile (Aborted otherwise)."""
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            values = _job_values(job) | {"update_time": now, "version": expected_version + 1}
            result = await session.execute(
                update(jobs).where(jobs.c.id == job.id, jobs.c.version == expected_version).values(values)
            )
            if (result.rowcount or 0) == 0:  # type: ignore[attr-defined]
                raise Aborted(f"job {job.name} changed concurrently; retry", reason="JOB_CHANGED")
            row = (await session.execute(select(jobs).where(jobs.c.id == job.id))).one()
            return job_from_row(row, now)

    async def delete_job(self, job_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(delete(job_runs).where(job_runs.c.job_id == job_id))
            result = await session.execute(delete(jobs).where(jobs.c.id == job_id))
            if (result.rowcount or 0) == 0:  # type: ignore[attr-defined]
                raise NotFound(f"job jobs/{job_id} not found", reason="JOB_NOT_FOUND")

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
        """PostgreSQL: one statement of fixed text whatever the batch size (arrays, `unnest`), so neither the
        client nor the server re-parses a new multi-row statement per batch."""
        columns = list(_RUN_COLUMNS)
        arrays = {name: [row.get(name) for row in rows] for name in columns}
        for name in ("nominal_time", "trigger_time", "next_check_at", "lease_expires_at"):
            arrays[name] = [None if v is None else v.astimezone(UTC) for v in arrays[name]]
        selects = ", ".join(f"CAST(:{name} AS {sql_type}[])" for name, sql_type in _RUN_COLUMNS.items())
        statement = text(
            f"INSERT INTO scheduler_job_runs ({', '.join(columns)}) "  # noqa: S608 - fixed column list
            f"SELECT * FROM unnest({selects}) "
            "ON CONFLICT (job_id, nominal_time) DO NOTHING RETURNING job_id, nominal_time"
        )
        result = await session.execute(statement, arrays)
        return [(r[0], r[1].astimezone(UTC)) for r in result.all()]

    # ------------------------------------------------------------------ due jobs

    async def claim_due_jobs(
        self,
        *,
        limit: int,
        lease_owner: str,
        lease_seconds: float,
        owner: str | None = None,
        job_id: str | None = None,
    ) -> tuple[datetime, list[Job], dict[str, tuple[bool, bool]]]:
        """Lease up to `limit` ACTIVE jobs whose next fire time has come; with (running, buffered) per job."""
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            where = [
                jobs.c.state == int(JobState.ACTIVE),
                jobs.c.next_fire_time.is_not(None),
                jobs.c.next_fire_time <= now,
            ]
            if owner is not None:
                where.append(jobs.c.owner == owner)
            if job_id is not None:
                where.append(jobs.c.id == job_id)
            rows = await claim_rows(
                session,
                jobs,
                where=where,
                order_by=[jobs.c.next_fire_time],
                limit=limit,
                lease_owner=lease_owner,
                lease_seconds=lease_seconds,
                now=now,
            )
            claimed = [job_from_row(row, now) for row in rows]
            info: dict[str, tuple[bool, bool]] = {job.id: (False, False) for job in claimed}
            if claimed:
                active = await session.execute(
                    select(job_runs.c.job_id, job_runs.c.state)
                    .where(
                        job_runs.c.job_id.in_(list(info)),
                        job_runs.c.state.in_([int(s) for s in (*ACTIVE_RUN_STATES, JobRunState.BUFFERED)]),
                    )
                    .distinct()
                )
                for jid, state in active.all():
                    running, buffered = info[jid]
                    if state == JobRunState.BUFFERED:
                        buffered = True
                    else:
                        running = True
                    info[jid] = (running, buffered)
            return now, claimed, info

    async def record_due(
        self, now: datetime, lease_owner: str, dispatch_lease_seconds: float, records: Sequence[DueRecord]
    ) -> list[ClaimedRun]:
        """Insert the run records of claimed jobs, advance the jobs and release them; returns the runs we own
        that must be dispatched (state TRIGGERED, leased to us so nobody else dispatches them meanwhile)."""
        async with self._sessions() as session, session.begin():
            rows: list[dict[str, Any]] = []
            for record in records:
                job = record.job
                for nominal, decision in record.decisions:
                    run = decision is Decision.RUN
                    rows.append(
                        {
                            "id": new_id(),
                            "job_id": job.id,
                            "owner": job.owner,
                            "pipeline": job.pipeline,
                            "nominal_time": nominal,
                            "state": int(JobRunState.TRIGGERED if run else JobRunState(int(decision))),
                            "manual": False,
                            "request_id": None,
                            "trigger_time": now if run else None,
                            "pipeline_run": "",
                            "attempt": 1 if run else 0,
                            "message": record.messages.get(decision, ""),
                            "next_check_at": now if run else None,
                            "lease_owner": lease_owner if run else None,
                            "lease_expires_at": now + timedelta(seconds=dispatch_lease_seconds) if run else None,
                        }
                    )
            owned = set(await self._insert_runs(session, rows))
            to_dispatch: list[ClaimedRun] = []
            job_updates: list[dict[str, Any]] = []
            for record in records:
                job = record.job
                counts = {d: 0 for d in Decision}
                last_fire: datetime | None = None
                last_outcome = 0
                for nominal, decision in record.decisions:
                    if (job.id, nominal) not in owned:
                        continue  # another worker recorded this fire time first
                    counts[decision] += 1
                    last_outcome = int(JobRunState.TRIGGERED) if decision is Decision.RUN else int(decision)
                    if decision is Decision.RUN:
                        last_fire = nominal
                to_dispatch.extend(
                    ClaimedRun(
                        run=JobRun(
                            id=row["id"],
                            job_id=job.id,
                            nominal_time=row["nominal_time"],
                            state=JobRunState.TRIGGERED,
                            trigger_time=now,
                            attempt=1,
                        ),
                        owner=job.owner,
                        pipeline=job.pipeline,
                    )
                    for row in rows
                    if row["job_id"] == job.id
                    and row["state"] == JobRunState.TRIGGERED
                    and (job.id, row["nominal_time"]) in owned
                )
                job_updates.append(
                    {
                        "b_id": job.id,
                        "b_next": record.next_fire_time,
                        "b_state": int(record.state),
                        "b_reason": record.state_reason,
                        "b_reason_code": record.state_reason_code,
                        "b_missed": counts[Decision.MISSED] + counts[Decision.COALESCED],
                        "b_skipped": counts[Decision.SKIPPED],
                        "b_triggered": counts[Decision.RUN],
                        "b_last_fire": last_fire,
                        "b_has_fire": last_fire is not None,
                        "b_outcome": last_outcome,
                        # The trigger happens now (the record is written before the call): lag = now - nominal.
                        "b_lag": None if last_fire is None else (now - last_fire).total_seconds(),
                    }
                )
            if job_updates:
                statement = (
                    update(jobs)
                    .where(jobs.c.id == bindparam("b_id"), jobs.c.lease_owner == lease_owner)
                    .values(
                        next_fire_time=bindparam("b_next", type_=jobs.c.next_fire_time.type),
                        state=bindparam("b_state"),
                        state_reason=bindparam("b_reason"),
                        state_reason_code=bindparam("b_reason_code"),
                        missed_count=jobs.c.missed_count + bindparam("b_missed"),
                        skipped_count=jobs.c.skipped_count + bindparam("b_skipped"),
                        triggered_count=jobs.c.triggered_count + bindparam("b_triggered"),
                        last_fire_time=func.coalesce(
                            bindparam("b_last_fire", type_=jobs.c.last_fire_time.type), jobs.c.last_fire_time
                        ),
                        last_outcome=func.coalesce(
                            func.nullif(bindparam("b_outcome"), 0),
                            jobs.c.last_outcome,
                        ),
                        last_lag_s=func.coalesce(bindparam("b_lag", type_=jobs.c.last_lag_s.type), jobs.c.last_lag_s),
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )
                connection = await session.connection()
                await connection.execute(statement, job_updates)
            return to_dispatch

    async def release(self, lease_owner: str, *, job_ids: Sequence[str], run_ids: Sequence[str]) -> int:
        """Give back leases still held (graceful shutdown), so another worker continues at once."""
        async with self._sessions() as session, session.begin():
            released = await release_rows(session, jobs, list(job_ids), lease_owner=lease_owner)
            released += await release_rows(session, job_runs, list(run_ids), lease_owner=lease_owner)
            return released

    # ------------------------------------------------------------------ active runs

    async def claim_active_runs(
        self,
        *,
        limit: int,
        lease_owner: str,
        lease_seconds: float,
        owner: str | None = None,
        job_id: str | None = None,
    ) -> tuple[datetime, list[ClaimedRun]]:
        """Lease runs that need attention now: undispatched, to poll, or whose retry time has come."""
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            where = [
                job_runs.c.state.in_([int(s) for s in ACTIVE_RUN_STATES]),
                job_runs.c.next_check_at.is_not(None),
                job_runs.c.next_check_at <= now,
            ]
            if owner is not None:
                where.append(job_runs.c.owner == owner)
            if job_id is not None:
                where.append(job_runs.c.job_id == job_id)
            rows = await claim_rows(
                session,
                job_runs,
                where=where,
                order_by=[job_runs.c.next_check_at],
                limit=limit,
                lease_owner=lease_owner,
                lease_seconds=lease_seconds,
                now=now,
            )
            return now, [
                ClaimedRun(run=run_from_row(row), owner=row._mapping["owner"], pipeline=row._mapping["pipeline"])
                for row in rows
            ]

    async def apply_run_changes(self, lease_owner: str, changes: Sequence[RunChange]) -> None:
        """Write many run outcomes in one executemany (only rows we still lease)."""
        if not changes:
            return
        async with self._sessions() as session, session.begin():
            statement = (
                update(job_runs)
                .where(job_runs.c.id == bindparam("b_id"), job_runs.c.lease_owner == lease_owner)
                .values(
                    state=bindparam("b_state"),
                    pipeline_run=bindparam("b_pipeline_run"),
                    attempt=bindparam("b_attempt"),
                    next_retry_time=bindparam("b_next_retry", type_=job_runs.c.next_retry_time.type),
                    finish_time=bindparam("b_finish", type_=job_runs.c.finish_time.type),
                    message=bindparam("b_message"),
                    next_check_at=bindparam("b_next_check", type_=job_runs.c.next_check_at.type),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            params = [
                {
                    "b_id": c.run_id,
                    "b_state": int(c.state),
                    "b_pipeline_run": c.pipeline_run,
                    "b_attempt": c.attempt,
                    "b_next_retry": c.next_retry_time,
                    "b_finish": c.finish_time,
                    "b_message": c.message,
                    "b_next_check": c.next_check_at,
                }
                for c in changes
            ]
            connection = await session.connection()
            await connection.execute(statement, params)
            outcomes = [c for c in changes if c.state != JobRunState.TRIGGERED]
            if outcomes:
                await connection.execute(
                    update(jobs).where(jobs.c.id == bindparam("b_job")).values(last_outcome=bindparam("b_outcome")),
                    [{"b_job": c.job_id, "b_outcome": int(c.state)} for c in outcomes],
                )

    async def record_successes(self, job_ids: Sequence[str]) -> list[Job]:
        """Reset the failure count of jobs whose run succeeded; returns those that had notified a failure."""
        if not job_ids:
            return []
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            recovered = (
                await session.execute(
                    select(jobs).where(jobs.c.id.in_(list(job_ids)), jobs.c.failure_notified.is_(True))
                )
            ).all()
            await session.execute(
                update(jobs).where(jobs.c.id.in_(list(job_ids))).values(consecutive_failures=0, failure_notified=False)
            )
            return [job_from_row(row, now) for row in recovered]

    async def count_failure(self, job_id: str) -> FailureCount | None:
        """Atomically add one consecutive failure; returns the counts after it (None if the job is gone)."""
        async with self._sessions() as session, session.begin():
            row = (
                await session.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(consecutive_failures=jobs.c.consecutive_failures + 1)
                    .returning(jobs.c.consecutive_failures, jobs.c.max_retries, jobs.c.deactivations, jobs.c.state)
                )
            ).first()
            if row is None:
                return None
            return FailureCount(
                consecutive_failures=row[0], max_retries=row[1], deactivations=row[2], state=JobState(row[3])
            )

    async def deactivate_for_failures(self, job_id: str, *, epoch: int, reason: str) -> int | None:
        """DEACTIVATE once per failure streak: only the caller that moves the epoch gets the new epoch."""
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            row = (
                await session.execute(
                    update(jobs)
                    .where(jobs.c.id == job_id, jobs.c.deactivations == epoch)
                    .values(
                        state=int(JobState.DEACTIVATED),
                        state_reason=reason,
                        state_reason_code="TOO_MANY_FAILURES",
                        deactivations=jobs.c.deactivations + 1,
                        failure_notified=True,
                        update_time=now,
                        version=jobs.c.version + 1,
                    )
                    .returning(jobs.c.deactivations)
                )
            ).first()
            return None if row is None else int(row[0])

    async def mark_failure_notified(self, job_id: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(update(jobs).where(jobs.c.id == job_id).values(failure_notified=True))

    async def pause_for_pipeline(self, job_id: str, *, code: str, reason: str) -> bool:
        """Pause an ACTIVE job because of its pipeline; True when this call paused it."""
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            result = await session.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == int(JobState.ACTIVE))
                .values(
                    state=int(JobState.PAUSED),
                    state_reason=reason,
                    state_reason_code=code,
                    paused_at=now,
                    update_time=now,
                    version=jobs.c.version + 1,
                )
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

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

    # ------------------------------------------------------------------ manual runs and listings

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

    # ------------------------------------------------------------------ notifications

    async def add_notifications(self, drafts: Sequence[NotificationDraft], *, deliver: bool) -> int:
        """Insert notifications; a repeated dedupe key is ignored (notify once). Returns how many were new."""
        if not drafts:
            return 0
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            rows = [
                {
                    "id": new_id(),
                    "owner": d.owner,
                    "kind": int(d.kind),
                    "title": d.title[:300],
                    "message": d.message,
                    "job": d.job,
                    "pipeline_run": d.pipeline_run,
                    "connection": d.connection,
                    "dedupe_key": d.dedupe_key[:200],
                    "create_time": now,
                    "delivery_attempts": 0,
                    "next_delivery_at": now if deliver else None,
                    "delivery_error": "",
                }
                for d in drafts
            ]
            statement = (
                self._insert(notifications)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(notifications.c.id)
            )
            return len((await session.execute(statement)).all())

    async def list_notifications(
        self, owner: str, *, unread_only: bool, after: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        async with self._sessions() as session:
            query = select(notifications).where(notifications.c.owner == owner)
            if unread_only:
                query = query.where(notifications.c.acknowledge_time.is_(None))
            if after is not None:
                created, last_id = after
                query = query.where(
                    or_(
                        notifications.c.create_time < created,
                        and_(notifications.c.create_time == created, notifications.c.id < last_id),
                    )
                )
            query = query.order_by(notifications.c.create_time.desc(), notifications.c.id.desc()).limit(limit)
            return [notification_from_row(row) for row in (await session.execute(query)).all()]

    async def acknowledge_notification(self, owner: str, notification_id: str) -> Notification | None:
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            await session.execute(
                update(notifications)
                .where(
                    notifications.c.id == notification_id,
                    notifications.c.owner == owner,
                    notifications.c.acknowledge_time.is_(None),
                )
                .values(acknowledge_time=now)
            )
            row = (
                await session.execute(
                    select(notifications).where(notifications.c.id == notification_id, notifications.c.owner == owner)
                )
            ).first()
            return None if row is None else notification_from_row(row)

    async def claim_outbox(
        self, *, limit: int, lease_owner: str, lease_seconds: float
    ) -> tuple[datetime, list[Notification]]:
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            rows = await claim_rows(
                session,
                notifications,
                where=[
                    notifications.c.next_delivery_at.is_not(None),
                    notifications.c.next_delivery_at <= now,
                    notifications.c.deliver_time.is_(None),
                ],
                order_by=[notifications.c.next_delivery_at],
                limit=limit,
                lease_owner=lease_owner,
                lease_seconds=lease_seconds,
                now=now,
            )
            return now, [notification_from_row(row) for row in rows]

    async def finish_delivery(
        self,
        notification_id: str,
        *,
        lease_owner: str,
        delivered: bool,
        next_attempt_at: datetime | None,
        error: str = "",
    ) -> None:
        async with self._sessions() as session, session.begin():
            now = await db_now(session)
            values: dict[str, Any] = {
                "delivery_attempts": notifications.c.delivery_attempts + 1,
                "lease_owner": None,
                "lease_expires_at": None,
                "delivery_error": error[:500],
            }
            if delivered:
                values |= {"deliver_time": now, "next_delivery_at": None}
            else:
                values |= {"next_delivery_at": next_attempt_at}
            await session.execute(
                update(notifications)
                .where(notifications.c.id == notification_id, notifications.c.lease_owner == lease_owner)
                .values(values)
            )

    async def delivery_attempts(self, notification_id: str) -> int:
        async with self._sessions() as session:
            value = (
                await session.execute(
                    select(notifications.c.delivery_attempts).where(notifications.c.id == notification_id)
                )
            ).scalar_one_or_none()
            return int(value or 0)


def run_from_row_dict(row: dict[str, Any]) -> JobRun:
    return JobRun(
        id=row["id"],
        job_id=row["job_id"],
        nominal_time=row["nominal_time"],
        state=JobRunState(row["state"]),
        trigger_time=row["trigger_time"],
        pipeline_run=row["pipeline_run"],
        attempt=row["attempt"],
        message=row["message"],
        manual=row["manual"],
    )
