"""Processing on SQLite and PostgreSQL against the fake pipelines service: misfires, retries, deactivation."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

import pytest
from contentpipe.common.database import transactional
from contentpipe.common.errors import InvalidArgument, NotFound
from contentpipe.scheduler.adapters.tables import jobs
from contentpipe.scheduler.domain.model import Job, JobRun, JobRunState, JobState, NotificationKind
from contentpipe.scheduler.domain.policies import MisfirePolicy, OverlapPolicy, run_request_id
from contentpipe.scheduler.service_layer.jobs import JobInput
from contentpipe.scheduler.service_layer.processing import Processor
from contentpipe.scheduler.service_layer.store import DueRecord, RunChange
from sqlalchemy import select

from tests.scheduler.conftest import Harness
from tests.scheduler.fake_pipelines import SUCCEED, fail

pytestmark = pytest.mark.integration
OWNER = "user-1"
PIPELINE = "pipelines/p1"


async def _runs(h: Harness, job_id: str) -> list[JobRun]:
    return await h.components.store.list_runs(job_id, state=None, after=None, limit=1000)


async def _due_now(h: Harness, *jobs: Job) -> datetime:
    """Make `jobs` due at the start of the current minute; returns that fire time."""
    nominal = (await h.now()).replace(second=0, microsecond=0)
    for job in jobs:
        await h.set_next_fire(job.id, nominal)
    return nominal


@pytest.mark.parametrize(
    ("policy", "expected_runs", "others"),
    [
        (MisfirePolicy.LATEST, 1, JobRunState.COALESCED),
        (MisfirePolicy.SKIP, 0, JobRunState.MISSED),
        (MisfirePolicy.ALL, 5, None),
    ],
)
async def test_five_hours_down_for_an_hourly_job(
    harness: Harness, policy: MisfirePolicy, expected_runs: int, others: JobRunState | None
) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    now = await h.now()
    # The latest fire time is 2-3 minutes ago: late (past the 60 s grace) but inside the 1 h window.
    latest = now.replace(second=0, microsecond=0) - timedelta(minutes=2)
    value = JobInput(
        pipeline=PIPELINE,
        cron_expression=f"{latest.minute} * * * *",
        misfire_policy=int(policy),
        catch_up_window=timedelta(hours=6) if policy is MisfirePolicy.ALL else None,
        overlap_policy=int(OverlapPolicy.ALLOW if policy is MisfirePolicy.ALL else OverlapPolicy.SKIP),
    )
    job = await h.components.jobs.create_job(OWNER, value, job_id="hourly-job")
    assert job.period == timedelta(hours=1)
    await h.set_next_fire(job.id, latest - timedelta(hours=4))

    result = await h.components.processor.process(100)

    assert result.claimed == 1
    assert result.triggered == expected_runs
    runs = sorted(await _runs(h, job.id), key=lambda r: r.nominal_time)
    assert [r.nominal_time for r in runs] == [latest - timedelta(hours=k) for k in (4, 3, 2, 1, 0)]
    triggered = [r for r in runs if r.state is JobRunState.TRIGGERED]
    assert len(triggered) == expected_runs
    assert sum(h.fake.state.run_calls.values()) == expected_runs
    if policy is MisfirePolicy.LATEST:
        assert triggered[0].nominal_time == latest
    if others is not None:
        assert {r.state for r in runs if r.state is not JobRunState.TRIGGERED} == {others}
    stored = await h.components.store.get_job(job.id)
    assert stored is not None and stored.next_fire_time is not None and stored.next_fire_time > now
    assert stored.stats.missed_count == 5 - expected_runs
    # A second pass finds nothing due and triggers nothing again.
    again = await h.components.processor.process(100)
    assert again.claimed == 0
    assert sum(h.fake.state.run_calls.values()) == expected_runs


async def test_each_fire_time_uses_a_request_id_derived_from_job_and_nominal_time(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    job = await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="* * * * *"))
    nominal = await _due_now(h, job)
    await h.components.processor.process(10)
    assert dict(h.fake.state.run_calls) == {run_request_id(job.id, nominal, 1): 1}
    # The call names the fire time it is for (the pipeline run's trigger shows it).
    assert dict(h.fake.state.fire_calls) == {(f"jobs/{job.id}", nominal.replace(tzinfo=None).isoformat()): 1}
    assert set(h.fake.state.acting_users) == {OWNER}
    # The call's request id (in both services' logs) is the same key.
    assert h.fake.state.call_request_ids == [run_request_id(job.id, nominal, 1)]


async def test_retries_with_backoff_then_deactivation_and_one_notification(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    h.fake.state.outcome = lambda run: fail()
    value = JobInput(
        pipeline=PIPELINE,
        cron_expression="0 0 1 1 *",
        max_retries=3,
        initial_backoff=timedelta(seconds=10),
        multiplier=3.0,
        max_backoff=timedelta(seconds=60),
    )
    job = await h.components.jobs.create_job(OWNER, value, job_id="failing-job")
    nominal = await _due_now(h, job)
    await h.components.processor.process(10)  # attempt 1 triggered

    ceilings = [10.0, 30.0]
    for attempt, ceiling in enumerate(ceilings, start=1):
        await h.check_runs_now()
        before = await h.now()
        await h.components.processor.process(10)  # poll: failed -> retry scheduled
        [run] = await _runs(h, job.id)
        assert run.state is JobRunState.RETRY_SCHEDULED and run.attempt == attempt
        assert run.next_retry_time is not None
        wait = (run.next_retry_time - before).total_seconds()
        assert -1.0 <= wait <= ceiling + 1.0, f"retry wait {wait} outside [0, {ceiling}]"
        await h.check_runs_now()
        await h.components.processor.process(10)  # the retry resumes the failed run
        [run] = await _runs(h, job.id)
        assert run.state is JobRunState.TRIGGERED and run.attempt == attempt + 1
        assert h.fake.state.resume_calls[run_request_id(job.id, nominal, attempt + 1)] == 1

    await h.check_runs_now()
    await h.components.processor.process(10)  # third failure: deactivated
    [run] = await _runs(h, job.id)
    assert run.state is JobRunState.FAILED
    stored = await h.components.store.get_job(job.id)
    assert stored is not None and stored.state is JobState.DEACTIVATED
    assert stored.consecutive_failures == 3
    assert "3 consecutive failed runs" in stored.state_reason
    await h.check_runs_now()
    await h.components.processor.process(10)
    notes = await h.components.notifications.list(OWNER, unread_only=True, after=None, limit=50)
    assert [n.kind for n in notes] == [NotificationKind.JOB_DEACTIVATED]
    assert notes[0].job == "jobs/failing-job"
    # One RunPipeline for the fire time; the retries continued it with ResumePipelineRun.
    assert sum(h.fake.state.run_calls.values()) == 1
    acknowledged = await h.components.notifications.acknowledge(OWNER, notes[0].name)
    assert acknowledged.acknowledge_time is not None
    assert await h.components.notifications.list(OWNER, unread_only=True, after=None, limit=50) == []


async def test_success_resets_failures_and_permanent_failure_skips_retries(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    h.fake.state.outcome = lambda run: fail(3, "connections/c1")  # NEEDS_REAUTH
    job = await h.components.jobs.create_job(
        OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 0 1 1 *", max_retries=5), job_id="reauth-job"
    )
    nominal = await _due_now(h, job)
    await h.components.processor.process(10)
    await h.check_runs_now()
    await h.components.processor.process(10)
    [run] = await _runs(h, job.id)
    assert run.state is JobRunState.FAILED  # no retry for a permanent class
    assert not h.fake.state.resume_calls
    notes = await h.components.notifications.list(OWNER, unread_only=False, after=None, limit=50)
    assert [(n.kind, n.connection) for n in notes] == [(NotificationKind.CONNECTION_NEEDS_REAUTH, "connections/c1")]

    h.fake.state.outcome = lambda run: SUCCEED
    await h.set_next_fire(job.id, nominal + timedelta(seconds=1))
    await h.components.processor.process(10)
    await h.check_runs_now()
    await h.components.processor.process(10)
    stored = await h.components.store.get_job(job.id)
    assert stored is not None and stored.consecutive_failures == 0 and stored.state is JobState.ACTIVE
    kinds = [n.kind for n in await h.components.notifications.list(OWNER, unread_only=False, after=None, limit=50)]
    assert NotificationKind.JOB_RECOVERED in kinds


async def test_paused_pipeline_pauses_the_job_and_resume_records_missed_times(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    job = await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="*/5 * * * *"))
    h.fake.add_pipeline(PIPELINE, OWNER, paused=True)
    due = (await h.now()).replace(second=0, microsecond=0)
    await h.set_next_fire(job.id, due)
    await h.components.processor.process(10)
    stored = await h.components.store.get_job(job.id)
    assert stored is not None and stored.state is JobState.PAUSED
    assert "paused" in stored.state_reason
    [run] = await _runs(h, job.id)
    assert run.state is JobRunState.MISSED
    notes = await h.components.notifications.list(OWNER, unread_only=False, after=None, limit=50)
    assert [n.kind for n in notes] == [NotificationKind.JOB_PAUSED]

    # Three fire times pass while paused: resuming records them MISSED and triggers nothing.
    h.fake.add_pipeline(PIPELINE, OWNER)
    await h.set_next_fire(job.id, due - timedelta(minutes=15))
    resumed = await h.components.jobs.resume_job(OWNER, job.name)
    assert resumed.state is JobState.ACTIVE
    assert resumed.next_fire_time is not None and resumed.next_fire_time > await h.now()
    runs = await _runs(h, job.id)
    assert sum(1 for r in runs if r.state is JobRunState.MISSED) >= 3
    assert sum(h.fake.state.run_calls.values()) == 0


async def test_overlap_buffer_one_runs_the_buffered_time_after_the_previous_run(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    job = await h.components.jobs.create_job(
        OWNER,
        JobInput(pipeline=PIPELINE, cron_expression="0 0 1 1 *", overlap_policy=int(OverlapPolicy.BUFFER_ONE)),
    )
    base = (await h.now()).replace(second=0, microsecond=0)
    await h.set_next_fire(job.id, base - timedelta(seconds=2))
    await h.components.processor.process(10)  # runs, stays RUNNING
    await h.set_next_fire(job.id, base - timedelta(seconds=1))
    await h.components.processor.process(10)  # buffered
    await h.set_next_fire(job.id, base)
    await h.components.processor.process(10)  # skipped
    states = sorted((r.nominal_time, r.state) for r in await _runs(h, job.id))
    assert [s for _, s in states] == [JobRunState.TRIGGERED, JobRunState.BUFFERED, JobRunState.SKIPPED]
    h.fake.state.outcome = lambda run: SUCCEED
    await h.check_runs_now()
    await h.components.processor.process(10)  # first ends -> buffered promoted
    await h.components.processor.process(10)  # promoted one dispatched
    states = sorted((r.nominal_time, r.state) for r in await _runs(h, job.id))
    assert [s for _, s in states][:2] == [JobRunState.SUCCEEDED, JobRunState.TRIGGERED]
    assert sum(h.fake.state.run_calls.values()) == 2


async def test_validation_and_ownership(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    h.fake.add_pipeline("pipelines/theirs", "user-2")
    with pytest.raises(InvalidArgument) as bad_cron:
        await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 0 31 2 *"))
    assert [v.field for v in bad_cron.value.violations] == ["job.cron.expression"]
    with pytest.raises(InvalidArgument) as bad_zone:
        await h.components.jobs.create_job(
            OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 9 * * *", time_zone="Mars/Olympus")
        )
    assert [v.field for v in bad_zone.value.violations] == ["job.cron.time_zone"]
    with pytest.raises(InvalidArgument):
        await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="CRON_TZ=UTC 0 9 * * *"))
    with pytest.raises(NotFound):
        await h.components.jobs.create_job(OWNER, JobInput(pipeline="pipelines/theirs", cron_expression="0 9 * * *"))
    job = await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 9 * * *"))
    with pytest.raises(NotFound):
        await h.components.jobs.get_job("user-2", job.name)


async def test_upsert_with_allow_missing_is_idempotent_and_reactivates_a_fired_one_off(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    run_at = (await h.now()) + timedelta(hours=1)
    value = JobInput(pipeline=PIPELINE, run_time=run_at)
    mask = ["display_name", "cron", "run_time"]  # what the pipelines' schedule step sends
    first = await h.components.jobs.update_job(OWNER, "jobs/pipeline-p1", value, mask, allow_missing=True)
    second = await h.components.jobs.update_job(OWNER, "jobs/pipeline-p1", value, mask, allow_missing=True)
    assert first.id == second.id == "pipeline-p1" and first.version == second.version
    await h.set_next_fire(first.id, (await h.now()).replace(microsecond=0))
    await h.components.processor.process(10)
    fired = await h.components.store.get_job(first.id)
    assert fired is not None and fired.state is JobState.DEACTIVATED
    later = JobInput(pipeline=PIPELINE, run_time=run_at + timedelta(hours=1))
    again = await h.components.jobs.update_job(OWNER, "jobs/pipeline-p1", later, ["run_time"], allow_missing=True)
    assert again.state is JobState.ACTIVE and again.next_fire_time == run_at + timedelta(hours=1)


async def test_shutdown_mid_dispatch_releases_leases_and_another_worker_resends_the_same_request(
    harness: Harness,
) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    job = await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 0 1 1 *"))
    nominal = await _due_now(h, job)
    h.fake.state.run_delay = 5.0
    first = Processor(h.components.store, h.components.pipelines, lease_owner="worker-a")
    task = asyncio.create_task(first.process(10))
    await asyncio.sleep(1.0)  # the record is written and its RunPipeline call is in flight
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await first.release_held() == 1
    h.fake.state.run_delay = 0.0
    second = Processor(h.components.store, h.components.pipelines, lease_owner="worker-b")
    result = await second.process(10)
    assert result.triggered == 1 and result.claimed == 0  # the fire time was recorded once, by worker a
    [run] = await _runs(h, job.id)
    assert run.state is JobRunState.TRIGGERED and run.pipeline_run
    assert set(h.fake.state.by_request) == {run_request_id(job.id, nominal, 1)}


async def test_a_batch_that_fails_before_its_commit_leaves_its_jobs_due_for_the_next_worker_at_once(
    harness: Harness,
) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    job = await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 0 1 1 *"))
    nominal = await _due_now(h, job)

    def broken_plan(*_: object) -> DueRecord:
        raise RuntimeError("the worker died while planning")

    with pytest.raises(RuntimeError):
        await h.components.store.record_due_jobs(
            broken_plan, limit=10, lease_owner="worker-a", claim_seconds=30, dispatch_lease_seconds=60
        )
    assert await _runs(h, job.id) == []
    # Nothing of worker a's claim outlives its transaction: worker b fires the time now, not after a lease.
    second = Processor(h.components.store, h.components.pipelines, lease_owner="worker-b")
    result = await second.process(10)
    assert (result.claimed, result.triggered) == (1, 1)
    assert set(h.fake.state.by_request) == {run_request_id(job.id, nominal, 1)}


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_jobs_in_another_workers_open_batch_are_skipped_not_waited_for(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    mine = await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 0 1 1 *"))
    theirs = await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 0 2 1 *"))
    nominal = await _due_now(h, mine, theirs)
    processor = Processor(h.components.store, h.components.pipelines, lease_owner="worker-b")
    async with transactional(h.components.engine).begin() as other:
        # Another worker is inside its batch: it holds the row lock of `theirs` until it commits.
        await other.execute(select(jobs.c.id).where(jobs.c.id == theirs.id).with_for_update())
        result = await asyncio.wait_for(processor.process(10), timeout=10)
        assert (result.claimed, result.triggered) == (1, 1)
        assert [r.nominal_time for r in await _runs(h, mine.id)] == [nominal]
        assert await _runs(h, theirs.id) == []
    # Its transaction ended without recording the fire time: the job is still due and fires now.
    result = await processor.process(10)
    assert (result.claimed, result.triggered) == (1, 1)
    assert [r.nominal_time for r in await _runs(h, theirs.id)] == [nominal]


async def test_run_outcomes_are_written_only_to_runs_this_worker_leases(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline(PIPELINE, OWNER)
    job = await h.components.jobs.create_job(OWNER, JobInput(pipeline=PIPELINE, cron_expression="0 0 1 1 *"))
    store = h.components.store
    first, _ = await store.insert_manual_run(job, request_id="first", lease_owner="me", lease_seconds=60)
    second, _ = await store.insert_manual_run(job, request_id="second", lease_owner="me", lease_seconds=60)
    theirs, _ = await store.insert_manual_run(job, request_id="theirs", lease_owner="other", lease_seconds=60)
    now = await h.now()
    outcomes = {theirs.id: JobRunState.SUCCEEDED, first.id: JobRunState.SUCCEEDED, second.id: JobRunState.FAILED}
    await store.apply_run_changes(
        "me",
        [
            RunChange(
                run_id=run_id,
                job_id=job.id,
                state=state,
                pipeline_run=f"{PIPELINE}/runs/{run_id}",
                attempt=1,
                finish_time=now,
                message=f"ended: {state.name}",
            )
            for run_id, state in outcomes.items()
        ],
    )

    runs = {run.id: run for run in await _runs(h, job.id)}
    for mine in (first, second):
        run = runs[mine.id]
        assert (run.state, run.pipeline_run, run.finish_time) == (outcomes[mine.id], f"{PIPELINE}/runs/{mine.id}", now)
        assert run.message == f"ended: {outcomes[mine.id].name}"
    # Another worker's lease: its run is left as it was.
    assert runs[theirs.id].state is JobRunState.TRIGGERED
    assert runs[theirs.id].finish_time is None
    # The job's last outcome is that of the batch's last change.
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.last_outcome == int(JobRunState.FAILED)
