"""Jobs: create, read, list, update, delete, and the failure streak counters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from contentpipe.common.database import db_now
from contentpipe.common.errors import Aborted, AlreadyExists, NotFound
from contentpipe.scheduler.adapters.sql_base import SqlStoreBase
from contentpipe.scheduler.adapters.sql_rows import (
    job_from_row,
    job_values,
)
from contentpipe.scheduler.adapters.tables import job_runs, jobs
from contentpipe.scheduler.domain.model import (
    Job,
    JobState,
)
from contentpipe.scheduler.domain.policies import MISFIRE_GRACE
from contentpipe.scheduler.service_layer.store import (
    FailureCount,
)
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError


class SqlJobs(SqlStoreBase):
    """The jobs part of service_layer.store.SchedulerStore."""

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
            values = job_values(job) | {
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
            values = job_values(job) | {"update_time": now, "version": expected_version + 1}
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
