"""generate (local) → post (outbox) → schedule through the four real services, as processes, on each database."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import grpc
import pytest
from contentpipe.api.oauth.v1 import connection_service_pb2 as conn_pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc as conn_grpc
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.oauth.v1 import posting_service_pb2_grpc as post_grpc
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched_pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.pipelines.integration.support import FAST_ENGINE, Client, create, generate_step, post_step, schedule_step
from tests.support import ServiceProcess, bearer
from tests.support.tls import issue, make_ca, server_env

SERVICES = ("generation", "oauth", "scheduler", "pipelines")

pytestmark = pytest.mark.e2e


def test_generate_post_schedule_through_the_real_services(tmp_path: Path, database_url: str) -> None:
    run_stack(tmp_path, database_url)


def test_a_tls_only_stack_with_mutual_tls_between_peers_runs_the_pipeline(tmp_path: Path) -> None:
    """Every service serves only TLS and requires client certificates; peers dial each other over mTLS."""
    ca = make_ca(tmp_path / "pki")
    tls = {name: server_env(issue(ca, tmp_path / "pki", name), ca, mutual=True) for name in SERVICES}
    run_stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'stack.db'}", tls)


def run_stack(tmp_path: Path, database_url: str, tls: dict[str, dict[str, str]] | None = None) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    processes = {
        name: ServiceProcess(name, tmp_path / name, database_url=database_url, env=(tls or {}).get(name))
        for name in SERVICES
    }
    addresses = {f"CONTENTPIPE_{name.upper()}_ADDR": proc.address for name, proc in processes.items()}
    for proc in processes.values():
        proc.env.update({**addresses, "CONTENTPIPE_ALLOW_PRIVATE_URLS": "1"})
    processes["pipelines"].env.update(FAST_ENGINE)

    started: list[ServiceProcess] = []
    try:
        for name in ("generation", "oauth", "scheduler", "pipelines"):
            started.append(processes[name].start())
        if tls:
            for proc in started:  # nothing answers in plaintext
                with grpc.insecure_channel(proc.address) as plain, pytest.raises(grpc.RpcError):
                    health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
        oauth = processes["oauth"].channel()
        connection = (
            conn_grpc.ConnectionServiceStub(oauth)
            .CompleteConnection(
                conn_pb.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX), metadata=bearer(user)
            )
            .connection
        )

        client = Client(processes["pipelines"].address, user, processes["pipelines"].channel())
        pipeline = create(client, generate_step(), post_step([connection.name]), schedule_step())
        queued = client.RunPipeline(pb.RunPipelineRequest(name=pipeline.name, request_id="e2e-1")).run
        started_at = time.monotonic()
        run = client.wait_run(queued.name, timeout=180)
        elapsed = time.monotonic() - started_at

        assert run.state == pb.PIPELINE_RUN_STATE_SUCCEEDED, str(run.error) + "".join(
            str(s.error) + str(list(s.targets)) for s in run.steps
        )
        video, post, schedule = run.steps
        # The MP4 is in the generation service's storage.
        asset = video.outputs.assets[0]
        assert asset.content_type == "video/mp4" and asset.uri.startswith("file://")
        assert Path(urlparse(asset.uri).path).read_bytes()[4:8] == b"ftyp"
        # The post is in the outbox, published, with the video attached.
        published = (
            post_grpc.PostingServiceStub(oauth)
            .GetPost(post_pb.GetPostRequest(name=post.outputs.posts[0]), metadata=bearer(user))
            .post
        )
        assert published.state == post_pb.POST_STATE_PUBLISHED
        assert published.media[0].uri == asset.uri
        assert published.text == f"Daily video: {asset.uri}"
        assert post.targets[0].post_state == post_pb.POST_STATE_PUBLISHED
        # ... and written into the outbox folder (`<outbox>/<post id>/post.json` beside its media).
        outbox = processes["oauth"].workdir / "data" / "outbox" / published.name.split("/")[1]
        assert (outbox / "post.json").is_file(), sorted(p.name for p in outbox.parent.glob("*"))
        # The scheduler has the pipeline's job with its next fire time.
        with processes["scheduler"].channel() as channel:
            job = (
                sched_grpc.SchedulerServiceStub(channel)
                .GetJob(sched_pb.GetJobRequest(name=schedule.outputs.job), metadata=bearer(user))
                .job
            )
        assert job.pipeline == pipeline.name and job.state == sched_pb.JOB_STATE_ACTIVE
        assert (job.cron.expression, job.cron.time_zone) == ("0 9 * * *", "Europe/Berlin")
        assert job.next_fire_time.ToDatetime() == schedule.outputs.next_run_time.ToDatetime()
        # The history shows every step with its outputs.
        (listed,) = client.ListPipelineRuns(pb.ListPipelineRunsRequest(parent=pipeline.name)).runs
        assert listed.name == run.name
        assert [s.state for s in listed.steps] == [pb.STEP_RUN_STATE_SUCCEEDED] * 3
        assert listed.steps[0].outputs.generation and listed.steps[1].outputs.posts and listed.steps[2].outputs.job
        print(f"e2e run SUCCEEDED in {elapsed:.1f} s")
        client.close()
        oauth.close()
    finally:
        for proc in reversed(started):
            proc.terminate()
