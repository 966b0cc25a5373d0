"""Pausing a pipeline pauses its scheduler jobs (the real scheduler), and resuming it resumes only those."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched_pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc

from tests.pipelines.fakes import FakePeers
from tests.pipelines.integration.support import FAST_ENGINE, Client, create, generate_step
from tests.support import ServiceProcess, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def peers() -> Iterator[FakePeers]:
    with FakePeers() as fakes:
        yield fakes


def test_pause_and_resume_follow_the_pipeline(tmp_path: Path, database_url: str, peers: FakePeers) -> None:
    import grpc

    user = f"user-{uuid.uuid4().hex[:8]}"
    pipelines = ServiceProcess("pipelines", tmp_path / "pipelines", database_url=database_url)
    scheduler = ServiceProcess(
        "scheduler",
        tmp_path / "scheduler",
        database_url=database_url,
        env={"CONTENTPIPE_PIPELINES_ADDR": pipelines.address, "SCHEDULER_PROCESS_INTERVAL": "1h"},
    )
    pipelines.env.update(
        {
            **FAST_ENGINE,
            "CONTENTPIPE_GENERATION_ADDR": peers.address,
            "CONTENTPIPE_OAUTH_ADDR": peers.address,
            "CONTENTPIPE_SCHEDULER_ADDR": scheduler.address,
        }
    )
    started: list[ServiceProcess] = []
    try:
        for process in (scheduler, pipelines):
            started.append(process.start(timeout=120))
        client = Client(pipelines.address, user)
        pipeline = create(client, generate_step())
        with grpc.insecure_channel(scheduler.address) as channel:
            jobs = sched_grpc.SchedulerServiceStub(channel)
            me = bearer(user)

            def job(job_id: str) -> sched_pb.Job:
                return jobs.GetJob(sched_pb.GetJobRequest(name=f"jobs/{job_id}"), metadata=me).job

            for job_id in ("daily-post", "weekly-post"):
                jobs.CreateJob(
                    sched_pb.CreateJobRequest(
                        job=sched_pb.Job(pipeline=pipeline.name, cron=sched_pb.CronSchedule(expression="0 9 * * *")),
                        job_id=job_id,
                    ),
                    metadata=me,
                )
            jobs.PauseJob(sched_pb.PauseJobRequest(name="jobs/weekly-post", reason="on holiday"), metadata=me)

            client.UpdatePipeline(
                pb.UpdatePipelineRequest(pipeline=pb.Pipeline(name=pipeline.name, state=pb.PIPELINE_STATE_PAUSED))
            )
            daily = job("daily-post")
            assert daily.state == sched_pb.JOB_STATE_PAUSED and daily.state_reason == "its pipeline is paused"
            assert job("weekly-post").state_reason == "on holiday"

            client.UpdatePipeline(
                pb.UpdatePipelineRequest(pipeline=pb.Pipeline(name=pipeline.name, state=pb.PIPELINE_STATE_ACTIVE))
            )
            daily = job("daily-post")
            assert daily.state == sched_pb.JOB_STATE_ACTIVE and daily.HasField("next_fire_time")
            # A job its owner paused for their own reasons stays paused.
            weekly = job("weekly-post")
            assert weekly.state == sched_pb.JOB_STATE_PAUSED and weekly.state_reason == "on holiday"
        client.close()
    finally:
        for process in reversed(started):
            process.terminate()
