"""Dispatch: lease due jobs and record their fire times; lease active runs and write their outcomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from contentpipe.common.batches import batch_statement
from contentpipe.common.database import claim_rows, db_now, release_rows
from contentpipe.common.ids import new_id
from contentpipe.scheduler.adapters.sql_rows import job_from_row, run_from_row
from contentpipe.scheduler.adapters.sql_runs import SqlJobRuns
from contentpipe.scheduler.adapters.tables import job_runs, jobs
from contentpipe.scheduler.domain.model import (
    ACTIVE_RUN_STATES,
    Job,
    JobRun,
    JobRunState,
    JobState,
)
from contentpipe.scheduler.domain.policies import Decision
from contentpipe.scheduler.service_layer.store import (
    ClaimedRun,
    DueRecord,
    RunChange,
)
from sqlalchemy import Integer, Table, Update, bindparam, func, select, update
from sqlalchemy.types import TypeEngine

# A job advanced after its fire times were recorded (only jobs this worker still leases).
_ADVANCE_COLUMNS: dict[str, TypeEngine[Any]] = {
    "b_id": jobs.c.id.type,
    "b_next": jobs.c.next_fire_time.type,
    "b_state": jobs.c.state.type,
    "b_reason": jobs.c.state_reason.type,
    "b_reason_code": jobs.c.state_reason_code.type,
    "b_missed": Integer(),
    "b_skipped": Integer(),
    "b_triggered": Integer(),
    "b_last_fire": jobs.c.last_fire_time.type,
    "b_outcome": jobs.c.last_outcome.type,
    "b_lag": jobs.c.last_lag_s.type,
}


def _written_back(table: Table, value: Callable[[str], Any], **values: Any) -> Update:
    """`values` written to the row `b_id` only while this worker (`b_lease_owner`) leases it; the lease is given
    back in the same write."""
    return (
        update(table)
        .where(table.c.id == value("b_id"), table.c.lease_owner == bindparam("b_lease_owner"))
        .values(**values, lease_owner=None, lease_expires_at=None)
    )


def _advance_jobs(value: Callable[[str], Any]) -> Update:
    return _written_back(
        jobs,
        value,
        next_fire_time=value("b_next"),
        state=value("b_state"),
        state_reason=value("b_reason"),
        state_reason_code=value("b_reason_code"),
        missed_count=jobs.c.missed_count + value("b_missed"),
        skipped_count=jobs.c.skipped_count + value("b_skipped"),
        triggered_count=jobs.c.triggered_count + value("b_triggered"),
        last_fire_time=func.coalesce(value("b_last_fire"), jobs.c.last_fire_time),
        last_outcome=func.coalesce(func.nullif(value("b_outcome"), 0), jobs.c.last_outcome),
        last_lag_s=func.coalesce(value("b_lag"), jobs.c.last_lag_s),
    )


# A run's outcome written back (only runs this worker still leases).
_CHANGE_COLUMNS: dict[str, TypeEngine[Any]] = {
    "b_id": job_runs.c.id.type,
    "b_state": job_runs.c.state.type,
    "b_pipeline_run": job_runs.c.pipeline_run.type,
    "b_attempt": job_runs.c.attempt.type,
    "b_next_retry": job_runs.c.next_retry_time.type,
    "b_finish": job_runs.c.finish_time.type,
    "b_message": job_runs.c.message.type,
    "b_next_check": job_runs.c.next_check_at.type,
}


def _change_runs(value: Callable[[str], Any]) -> Update:
    return _written_back(
        job_runs,
        value,
        state=value("b_state"),
        pipeline_run=value("b_pipeline_run"),
        attempt=value("b_attempt"),
        next_retry_time=value("b_next_retry"),
        finish_time=value("b_finish"),
        message=value("b_message"),
        next_check_at=value("b_next_check"),
    )


# A job's last outcome, from its runs that ended.
_OUTCOME_COLUMNS: dict[str, TypeEngine[Any]] = {"b_job": jobs.c.id.type, "b_outcome": jobs.c.last_outcome.type}


def _set_outcomes(value: Callable[[str], Any]) -> Update:
    return update(jobs).where(jobs.c.id == value("b_job")).values(last_outcome=value("b_outcome"))


_ADVANCE_JOBS = batch_statement(_advance_jobs, _ADVANCE_COLUMNS)
_CHANGE_RUNS = batch_statement(_change_runs, _CHANGE_COLUMNS)
_SET_OUTCOMES = batch_statement(_set_outcomes, _OUTCOME_COLUMNS)


class SqlDispatch(SqlJobRuns):
    """The claiming part of service_layer.store.SchedulerStore (batches: a few statements per batch)."""

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
            # The TRIGGERED rows of each job, so the runs to dispatch are found per job, not by scanning the batch.
            triggered: dict[str, list[dict[str, Any]]] = {}
            for record in records:
                job = record.job
                for nominal, decision in record.decisions:
                    run = decision is Decision.RUN
                    row = {
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
                    rows.append(row)
                    if run:
                        triggered.setdefault(job.id, []).append(row)
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
                    for row in triggered.get(job.id, ())
                    if (job.id, row["nominal_time"]) in owned
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
                        "b_outcome": last_outcome,
                        # The trigger happens now (the record is written before the call): lag = now - nominal.
                        "b_lag": None if last_fire is None else (now - last_fire).total_seconds(),
                    }
                )
            if job_updates:
                await self._execute_batch(session, _ADVANCE_JOBS, job_updates, b_lease_owner=lease_owner)
            return to_dispatch

    async def release(self, lease_owner: str, *, job_ids: Sequence[str], run_ids: Sequence[str]) -> int:
        """Give back leases still held (graceful shutdown), so another worker continues at once."""
        async with self._sessions() as session, session.begin():
            released = await release_rows(session, jobs, list(job_ids), lease_owner=lease_owner)
            released += await release_rows(session, job_runs, list(run_ids), lease_owner=lease_owner)
            return released

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
        """Write many run outcomes in one statement (only rows we still lease)."""
        if not changes:
            return
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
        # A job's last outcome is that of its last run in the batch to end (one row per job for the UPDATE … FROM).
        outcomes = {c.job_id: int(c.state) for c in changes if c.state != JobRunState.TRIGGERED}
        async with self._sessions() as session, session.begin():
            await self._execute_batch(session, _CHANGE_RUNS, params, b_lease_owner=lease_owner)
            if outcomes:
                await self._execute_batch(
                    session,
                    _SET_OUTCOMES,
                    [{"b_job": job, "b_outcome": outcome} for job, outcome in outcomes.items()],
                )
