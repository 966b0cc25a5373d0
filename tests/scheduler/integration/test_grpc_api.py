"""The scheduler's gRPC API as a process: CRUD with update_mask, pause/resume/trigger, paging, overdue, errors."""

from __future__ import annotations

import re
from datetime import timedelta

import grpc
import grpc.aio
import pytest
from contentpipe.api.scheduler.v1 import notification_service_pb2 as npb
from contentpipe.api.scheduler.v1 import notification_service_pb2_grpc as npb_grpc
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as pb_grpc
from contentpipe.common.database import create_engine
from contentpipe.scheduler.adapters.sql_store import SqlSchedulerStore
from contentpipe.scheduler.adapters.tables import jobs
from contentpipe.scheduler.domain.model import NotificationKind
from contentpipe.scheduler.service_layer.store import NotificationDraft
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import update

from tests.scheduler.conftest import clean_database, scheduler_env
from tests.scheduler.fake_pipelines import FakePipelines
from tests.support import bearer, mint_token

pytestmark = pytest.mark.integration


def violations(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def test_jobs_api_end_to_end(database_url: str, fake_pipelines: FakePipelines, start_service) -> None:
    await clean_database(database_url)
    fake_pipelines.add_pipeline("pipelines/p1", "user-1")
    proc = start_service(
        "scheduler",
        database_url=database_url,
        env=scheduler_env(database_url, fake_pipelines.address, SCHEDULER_PROCESS_INTERVAL="1h"),
    )
    me, other = bearer("user-1"), bearer("user-2")
    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        notes = npb_grpc.NotificationServiceStub(channel)

        created = []
        for i in range(3):
            job = pb.Job(pipeline="pipelines/p1", display_name=f"job {i}", cron=pb.CronSchedule(expression="0 9 * * *"))
            created.append((await stub.CreateJob(pb.CreateJobRequest(job=job, job_id=f"api-job-{i}"), metadata=me)).job)
        with pytest.raises(grpc.aio.AioRpcError) as dup:
            await stub.CreateJob(pb.CreateJobRequest(job=created[0], job_id="api-job-0"), metadata=me)
        assert dup.value.code() == grpc.StatusCode.ALREADY_EXISTS

        # Idempotent create by request id.
        job = pb.Job(pipeline="pipelines/p1", cron=pb.CronSchedule(expression="*/5 * * * *", time_zone="Asia/Tokyo"))
        a = (await stub.CreateJob(pb.CreateJobRequest(job=job, request_id="req-1"), metadata=me)).job
        b = (await stub.CreateJob(pb.CreateJobRequest(job=job, request_id="req-1"), metadata=me)).job
        assert a.name == b.name

        # Paging, newest first, and another user sees nothing.
        first = await stub.ListJobs(pb.ListJobsRequest(page_size=2), metadata=me)
        second = await stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=first.next_page_token), metadata=me)
        names = [j.name for j in first.jobs] + [j.name for j in second.jobs]
        assert len(names) == 4 and len(set(names)) == 4 and not second.next_page_token
        assert not (await stub.ListJobs(pb.ListJobsRequest(), metadata=other)).jobs
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await stub.GetJob(pb.GetJobRequest(name="jobs/api-job-0"), metadata=other)
        assert foreign.value.code() == grpc.StatusCode.NOT_FOUND

        # update_mask changes only the named fields.
        patch = pb.Job(name="jobs/api-job-0", display_name="renamed", cron=pb.CronSchedule(expression="bad"))
        updated = (
            await stub.UpdateJob(
                pb.UpdateJobRequest(job=patch, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])),
                metadata=me,
            )
        ).job
        assert updated.display_name == "renamed" and updated.cron.expression == "0 9 * * *"
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.UpdateJob(
                pb.UpdateJobRequest(job=patch, update_mask=field_mask_pb2.FieldMask(paths=["cron"])), metadata=me
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(bad.value) == ["job.cron.expression"]
        # No update_mask: only the fields sent change (AIP-134), the schedule is kept.
        implied = (
            await stub.UpdateJob(
                pb.UpdateJobRequest(job=pb.Job(name="jobs/api-job-0", display_name="implied")), metadata=me
            )
        ).job
        assert implied.display_name == "implied" and implied.cron.expression == "0 9 * * *"
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.UpdateJob(pb.UpdateJobRequest(job=pb.Job(name="jobs/api-job-0")), metadata=me)
        assert violations(empty.value) == ["update_mask"]
        # Etags: the one format every service uses; a stale one is ABORTED, the current one goes through.
        assert re.fullmatch(r'"\d+"', implied.etag) and implied.etag != created[0].etag
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await stub.UpdateJob(
                pb.UpdateJobRequest(job=pb.Job(name="jobs/api-job-0", display_name="x", etag=created[0].etag)),
                metadata=me,
            )
        assert stale.value.code() == grpc.StatusCode.ABORTED
        fresh = pb.Job(name="jobs/api-job-0", display_name="current", etag=implied.etag)
        assert (await stub.UpdateJob(pb.UpdateJobRequest(job=fresh), metadata=me)).job.display_name == "current"

        # Pause, resume, trigger, runs, delete.
        paused = (await stub.PauseJob(pb.PauseJobRequest(name="jobs/api-job-1", reason="holiday"), metadata=me)).job
        assert paused.state == pb.JOB_STATE_PAUSED and paused.state_reason == "holiday"
        resumed = (await stub.ResumeJob(pb.ResumeJobRequest(name="jobs/api-job-1"), metadata=me)).job
        assert resumed.state == pb.JOB_STATE_ACTIVE
        run = (
            await stub.TriggerJob(pb.TriggerJobRequest(name="jobs/api-job-1", request_id="t-1"), metadata=me)
        ).job_run
        again = (
            await stub.TriggerJob(pb.TriggerJobRequest(name="jobs/api-job-1", request_id="t-1"), metadata=me)
        ).job_run
        assert run.manual and run.state == pb.JOB_RUN_STATE_TRIGGERED and run.pipeline_run
        assert again.name == run.name
        assert sum(fake_pipelines.state.run_calls.values()) == 1
        listed = await stub.ListJobRuns(pb.ListJobRunsRequest(parent="jobs/api-job-1"), metadata=me)
        assert [r.name for r in listed.job_runs] == [run.name]
        await stub.DeleteJob(pb.DeleteJobRequest(name="jobs/api-job-2"), metadata=me)
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stub.GetJob(pb.GetJobRequest(name="jobs/api-job-2"), metadata=me)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND

        # Overdue: a fire time passed without a run record.
        engine = create_engine(database_url)
        async with engine.begin() as conn:
            past = (await stub.GetJob(pb.GetJobRequest(name="jobs/api-job-0"), metadata=me)).job.create_time
            await conn.execute(
                update(jobs)
                .where(jobs.c.id == "api-job-0")
                .values(
                    next_fire_time=past.ToDatetime().replace(tzinfo=__import__("datetime").UTC) - timedelta(minutes=5)
                )
            )
        await engine.dispose()
        overdue = await stub.ListJobs(pb.ListJobsRequest(overdue_only=True), metadata=me)
        assert [j.name for j in overdue.jobs] == ["jobs/api-job-0"] and overdue.jobs[0].stats.overdue
        processed = await stub.ProcessDueJobs(pb.ProcessDueJobsRequest(job="jobs/api-job-0"), metadata=me)
        assert processed.claimed == 1
        assert not (await stub.ListJobs(pb.ListJobsRequest(overdue_only=True), metadata=me)).jobs

        # Preview flags and limits; notifications start empty.
        preview = await stub.PreviewSchedule(
            pb.PreviewScheduleRequest(
                cron=pb.CronSchedule(expression="30 2 * * *", time_zone="Europe/Berlin"),
                count=2,
                start_time=timestamp_pb2.Timestamp(seconds=1774656000),  # 2026-03-28T00:00Z
            ),
            metadata=me,
        )
        assert [(f.local_time, f.in_dst_gap) for f in preview.fire_times] == [
            ("2026-03-28T02:30:00+01:00", False),
            ("2026-03-29T03:00:00+02:00", True),
        ]
        with pytest.raises(grpc.aio.AioRpcError) as never:
            await stub.PreviewSchedule(
                pb.PreviewScheduleRequest(cron=pb.CronSchedule(expression="0 0 31 2 *")), metadata=me
            )
        assert never.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "never fire" in (never.value.details() or "")
        assert not (await notes.ListNotifications(npb.ListNotificationsRequest(), metadata=me)).notifications

        # A service token processes everybody's jobs; a user token only its own.
        service = (("authorization", f"Bearer {mint_token_service()}"),)
        assert (await stub.ProcessDueJobs(pb.ProcessDueJobsRequest(), metadata=service)).claimed == 0


def mint_token_service() -> str:
    from tests.support import TEST_JWT_SECRET

    return mint_token(TEST_JWT_SECRET, "service:pipelines", "service")


async def test_get_notification_returns_the_callers_own_only(
    database_url: str, fake_pipelines: FakePipelines, start_service
) -> None:
    await clean_database(database_url)
    engine = create_engine(database_url)
    try:
        draft = NotificationDraft(
            owner="user-1",
            kind=NotificationKind.JOB_DEACTIVATED,
            title="job deactivated",
            message="jobs/j1 failed 5 times in a row",
            dedupe_key="get-notification-test",
            job="jobs/j1",
        )
        assert await SqlSchedulerStore(engine).add_notifications([draft], deliver=False) == 1
    finally:
        await engine.dispose()
    proc = start_service(
        "scheduler",
        database_url=database_url,
        env=scheduler_env(database_url, fake_pipelines.address, SCHEDULER_PROCESS_INTERVAL="1h"),
    )
    me, other = bearer("user-1"), bearer("user-2")
    async with grpc.aio.insecure_channel(proc.address) as channel:
        notes = npb_grpc.NotificationServiceStub(channel)
        [listed] = (await notes.ListNotifications(npb.ListNotificationsRequest(), metadata=me)).notifications
        got = (await notes.GetNotification(npb.GetNotificationRequest(name=listed.name), metadata=me)).notification
        assert got == listed
        assert got.kind == npb.NOTIFICATION_KIND_JOB_DEACTIVATED and got.job == "jobs/j1"
        with pytest.raises(grpc.aio.AioRpcError) as foreign:
            await notes.GetNotification(npb.GetNotificationRequest(name=listed.name), metadata=other)
        assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await notes.GetNotification(npb.GetNotificationRequest(name="jobs/j1"), metadata=me)
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
