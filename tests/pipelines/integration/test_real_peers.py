"""generate (local) → post → schedule through the real generation and scheduler services (oauth faked here;
tests/pipelines/e2e runs all four real services)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched_pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc

from tests.pipelines.fakes import FakePeers
from tests.pipelines.integration.support import FAST_ENGINE, Client, create, generate_step, post_step, schedule_step
from tests.support import ServiceProcess, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def peers() -> Iterator[FakePeers]:
    with FakePeers() as fakes:
        yield fakes


def test_run_through_real_generation_and_scheduler(tmp_path: Path, database_url: str, peers: FakePeers) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    pipelines = ServiceProcess("pipelines", tmp_path / "pipelines", database_url=database_url)
    generation = ServiceProcess("generation", tmp_path / "generation", database_url=database_url)
    scheduler = ServiceProcess(
        "scheduler",
        tmp_path / "scheduler",
        database_url=database_url,
        env={"CONTENTPIPE_PIPELINES_ADDR": pipelines.address},
    )
    pipelines.env.update(
        {
            **FAST_ENGINE,
            "CONTENTPIPE_GENERATION_ADDR": generation.address,
            "CONTENTPIPE_SCHEDULER_ADDR": scheduler.address,
            "CONTENTPIPE_OAUTH_ADDR": peers.address,
        }
    )
    started = []
    try:
        for process in (generation, scheduler, pipelines):
            started.append(process.start())
        client = Client(pipelines.address, user)
        connection = peers.add_connection(user)
        pipeline = create(client, generate_step(), post_step([connection]), schedule_step())
        queued = client.RunPipeline(pb.RunPipelineRequest(name=pipeline.name)).run
        run = client.wait_run(queued.name, timeout=120)

        assert run.state == pb.PIPELINE_RUN_STATE_SUCCEEDED, (run, pipelines.logs()[-3000:])
        video, post, schedule = run.steps
        asset = video.outputs.assets[0]
        assert asset.content_type == "video/mp4"
        assert asset.uri.startswith("file://"), asset.uri
        assert Path(urlparse(asset.uri).path).read_bytes()[4:8] == b"ftyp"  # an MP4 in local storage
        created = peers.state.posts[post.outputs.posts[0]]
        assert created.media[0].uri == asset.uri
        with ServiceProcessChannel(scheduler.address) as stub:
            job = stub.GetJob(sched_pb.GetJobRequest(name=schedule.outputs.job), metadata=bearer(user)).job
        assert job.pipeline == pipeline.name
        assert (job.cron.expression, job.cron.time_zone) == ("0 9 * * *", "Europe/Berlin")
        assert job.next_fire_time.ToDatetime() == schedule.outputs.next_run_time.ToDatetime()
        client.close()
    finally:
        for process in reversed(started):
            process.terminate()


class ServiceProcessChannel:
    def __init__(self, address: str) -> None:
        import grpc

        self._channel = grpc.insecure_channel(address)

    def __enter__(self) -> sched_grpc.SchedulerServiceStub:
        return sched_grpc.SchedulerServiceStub(self._channel)

    def __exit__(self, *exc: object) -> None:
        self._channel.close()
