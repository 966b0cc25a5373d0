"""Dispatch: claim due jobs and record their fire times; lease active runs and write their outcomes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from contentpipe.common.batches import batch_statement
from contentpipe.common.database import claim_rows, db_now, lock_rows, release_rows
from contentpipe.common.ids import new_id
from contentpipe.scheduler.adapters.sql_rows import job_from_row, run_from_row
from contentpipe.scheduler.adapters.sql_runs import SqlJobRuns
from contentpipe.scheduler.adapters.tables import job_runs, jobs
from contentpipe.scheduler.domain.model import (
    ACTIVE_RUN_STATES,
    JobRun,
    JobRunState,
    JobState,
)
from contentpipe.scheduler.domain.policies import Decision
from contentpipe.scheduler.service_layer.store import (
    ClaimedRun,
    DueBatch,
    DueRecord,
    PlanDue,
    RunChange,
)
from sqlalchemy import Integer, Table, Update, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import TypeEngine

# A job advanced after its fire times were recorded.
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
    # No lease to check: the claim that planned the job holds it until this write commits (`record_due_jobs`).
    return (
        update(jobs)
        .where(jobs.c.id == value("b_id"))
        .values(
            lease_owner=None,
            lease_expires_at=None,
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


# The clock of a claim transaction, and how long it may sit idle holding its row locks (a stuck worker) before
# the server ends it: one round trip.
_NOW_AND_TRANSACTION_TIMEOUT = text("SELECT now(), set_config('idle_in_transaction_session_timeout', :timeout, true)")
_ADVANCE_JOBS = batch_statement(_advance_jobs, _ADVANCE_COLUMNS)
_CHANGE_RUNS = batch_statement(_change_runs, _CHANGE_COLUMNS)
_SET_OUTCOMES = batch_statement(_set_outcomes, _OUTCOME_COLUMNS)


class SqlDispatch(SqlJobRuns):
    """The claiming part of service_layer.store.SchedulerStore (batches: a few statements per batch)."""

    async def record_due_jobs(
        self,
        plan: PlanDue,
        *,
        limit: int,
        lease_owner: str,
        claim_seconds: float,
        dispatch_lease_seconds: float,
        owner: str | None = None,
        job_id: str | None = None,
    ) -> DueBatch:
        """Claim up to `limit` ACTIVE jobs whose next fire time has come, plan each (`plan`), insert their run
        records and advance the jobs, in one transaction.

        The claim is `lock_rows`: on PostgreSQL a row lock held to the commit, so a worker that dies mid-batch has
        written nothing and holds nothing (the jobs are due again at once), and one stuck inside the transaction
        for `claim_seconds` is cut off by the server; each job is written once per batch (the advance). On SQLite a
        lease, cleared by the advance in the same transaction. Jobs still leased by a worker of an earlier version
        are skipped until their lease expires.
        """
        async with self._sessions() as session, session.begin():
            if self._pg:
                timeout = {"timeout": str(round(claim_seconds * 1000))}
                now = (await session.execute(_NOW_AND_TRANSACTION_TIMEOUT, timeout)).scalar_one().astimezone(UTC)
            else:
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
            rows = await lock_rows(
                session,
                jobs,
                where=where,
                order_by=[jobs.c.next_fire_time],
                limit=limit,
                lease_owner=lease_owner,
                lease_seconds=claim_seconds,
                now=now,
            )
            if not rows:
                return DueBatch(now=now, records=[], to_dispatch=[])
            claimed = [job_from_row(row, now) for row in rows]
            running = await self._running(session, [job.id for job in claimed])
            records = [plan(job, now, *running.get(job.id, (False, False))) for job in claimed]
            to_dispatch = await self._record(session, now, lease_owner, dispatch_lease_seconds, records)
            return DueBatch(now=now, records=records, to_dispatch=to_dispatch)

    async def _running(self, session: AsyncSession, job_ids: list[str]) -> dict[str, tuple[bool, bool]]:
        """(a run is going, a fire time is buffered) of the jobs that have either."""
        info: dict[str, tuple[bool, bool]] = {}
        active = await session.execute(
            select(job_runs.c.job_id, job_runs.c.state)
            .where(
                job_runs.c.job_id.in_(job_ids),
                job_runs.c.state.in_([int(s) for s in (*ACTIVE_RUN_STATES, JobRunState.BUFFERED)]),
            )
            .distinct()
        )
        for jid, state in active.all():
            running, buffered = info.get(jid, (False, False))
            if state == JobRunState.BUFFERED:
                buffered = True
            else:
                running = True
            info[jid] = (running, buffered)
        return info

    async def _record(
        self,
        session: AsyncSession,
        now: datetime,
        lease_owner: str,
        dispatch_lease_seconds: float,
        records: Sequence[DueRecord],
    ) -> list[ClaimedRun]:
        """Insert the run records of planned jobs and advance the jobs; returns the runs we own that must be
        dispatched (state TRIGGERED, leased to us so nobody else dispatches them meanwhile)."""
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
            counts = dict.fromkeys(Decision, 0)
            last_fire: datetime | None = None
            last_outcome = 0
            for nominal, decision in record.decisions:
                if (job.id, nominal) not in owned:
                    continue  # recorded before (e.g. by a worker that crashed before advancing the job)
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
        await self._execute_batch(session, _ADVANCE_JOBS, job_updates)
        return to_dispatch

    async def release_runs(self, lease_owner: str, run_ids: Sequence[str]) -> int:
        """Give back run leases still held (graceful shutdown), so another worker continues at once."""
        async with self._sessions() as session, session.begin():
            return await release_rows(session, job_runs, list(run_ids), lease_owner=lease_owner)

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
