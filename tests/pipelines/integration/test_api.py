"""PipelineService API through a real server: validation details, etags, revisions, history paging, batch mode."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from google.rpc import error_details_pb2, status_pb2

from tests.pipelines.fakes import FakePeers
from tests.pipelines.integration.support import (
    FAST_ENGINE,
    Client,
    create,
    generate_step,
    post_step,
    run,
    schedule_step,
    start_pipelines,
)
from tests.support import TEST_JWT_SECRET, ServiceProcess
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def peers() -> Iterator[FakePeers]:
    with FakePeers() as fakes:
        yield fakes


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def service(start_service: Callable[..., ServiceProcess], database_url: str, peers: FakePeers) -> ServiceProcess:
    return start_pipelines(start_service, database_url, peers)


@pytest.fixture
def client(service: ServiceProcess, user: str) -> Iterator[Client]:
    client = Client(service.address, user)
    yield client
    client.close()


def violations(error: grpc.RpcError) -> dict[str, str]:
    metadata: list[tuple[str, bytes]] = list(error.trailing_metadata() or ())  # type: ignore[arg-type]
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    return {v.field: v.description for v in bad.field_violations}
    return {}


def test_invalid_pipeline_names_every_step_and_field(client: Client, peers: FakePeers, user: str) -> None:
    mine = peers.add_connection(user)
    theirs = peers.add_connection("someone-else")
    steps = [
        generate_step(prompt="{{ steps.post.posts[0] }}"),
        post_step([mine, theirs, "connections/unknown"]),
        schedule_step(expression="0 25 * * *", zone="Europe/Nowhere"),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        client.CreatePipeline(pb.CreatePipelineRequest(pipeline=pb.Pipeline(display_name="x", steps=steps)))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(caught.value)
    assert "runs after this one" in found["pipeline.steps[0].generate_content.prompt"]
    assert "not yours" in found["pipeline.steps[1].post_to_platform.connections[1]"]
    assert "not yours" in found["pipeline.steps[1].post_to_platform.connections[2]"]
    assert "pipeline.steps[1].post_to_platform.connections[0]" not in found
    assert "pipeline.steps[2].schedule_pipeline.cron.expression" in found
    assert "pipeline.steps[2].schedule_pipeline.cron.time_zone" in found
    assert "pipeline.steps[0].generate_content.prompt" in (caught.value.details() or "")


def test_update_with_mask_and_etag_bumps_revision_and_stale_etag_aborts(client: Client, peers: FakePeers) -> None:
    created = create(client, generate_step())
    assert created.revision == 1 and created.etag == '"1"'  # the etag format every service uses

    change = pb.Pipeline(name=created.name, display_name="Renamed", description="ignored", etag=created.etag)
    updated = client.UpdatePipeline(
        pb.UpdatePipelineRequest(pipeline=change, update_mask={"paths": ["display_name"]})  # type: ignore[arg-type]
    ).pipeline
    assert (updated.display_name, updated.description, updated.revision) == ("Renamed", "", 2)
    assert len(updated.steps) == 1 and updated.etag != created.etag

    with pytest.raises(grpc.RpcError) as caught:
        client.UpdatePipeline(
            pb.UpdatePipelineRequest(pipeline=change, update_mask={"paths": ["display_name"]})  # type: ignore[arg-type]
        )
    assert caught.value.code() == grpc.StatusCode.ABORTED

    with pytest.raises(grpc.RpcError) as caught:
        client.UpdatePipeline(
            pb.UpdatePipelineRequest(pipeline=change, update_mask={"paths": ["owner"]})  # type: ignore[arg-type]
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.RpcError) as caught:
        client.DeletePipeline(pb.DeletePipelineRequest(name=created.name, etag=created.etag))
    assert caught.value.code() == grpc.StatusCode.ABORTED
    client.DeletePipeline(pb.DeletePipelineRequest(name=created.name, etag=updated.etag))
    with pytest.raises(grpc.RpcError) as caught:
        client.GetPipeline(pb.GetPipelineRequest(name=created.name))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_update_without_mask_changes_only_the_fields_sent(client: Client, peers: FakePeers) -> None:
    created = client.CreatePipeline(
        pb.CreatePipelineRequest(
            pipeline=pb.Pipeline(display_name="Daily", description="keep me", steps=[generate_step()])
        )
    ).pipeline
    # AIP-134: no update_mask means "the fields present", so the description and steps survive a rename.
    renamed = client.UpdatePipeline(
        pb.UpdatePipelineRequest(pipeline=pb.Pipeline(name=created.name, display_name="Renamed"))
    ).pipeline
    assert (renamed.display_name, renamed.description, len(renamed.steps)) == ("Renamed", "keep me", 1)
    assert renamed.state == created.state and renamed.revision == 2
    with pytest.raises(grpc.RpcError) as caught:
        client.UpdatePipeline(pb.UpdatePipelineRequest(pipeline=pb.Pipeline(name=created.name)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nothing to update" in violations(caught.value)["update_mask"]
    # `*` still replaces every updatable field.
    replaced = client.UpdatePipeline(
        pb.UpdatePipelineRequest(
            pipeline=pb.Pipeline(name=created.name, display_name="Bare", steps=[generate_step()]),
            update_mask={"paths": ["*"]},  # type: ignore[arg-type]
        )
    ).pipeline
    assert (replaced.display_name, replaced.description) == ("Bare", "")


def test_runs_pin_the_revision_they_started_with(client: Client, peers: FakePeers, user: str) -> None:
    peers.behaviour.generation_seconds = 0.5
    created = create(client, generate_step())
    queued = run(client, created)
    change = pb.Pipeline(
        name=created.name, steps=[generate_step(prompt="edited"), post_step([peers.add_connection(user)])]
    )
    client.UpdatePipeline(
        pb.UpdatePipelineRequest(pipeline=change, update_mask={"paths": ["steps"]})  # type: ignore[arg-type]
    )
    finished = client.wait_run(queued.name)
    assert finished.state == pb.PIPELINE_RUN_STATE_SUCCEEDED
    assert finished.pipeline_revision == 1 and len(finished.steps) == 1
    assert peers.state.generations[finished.steps[0].outputs.generation].prompt.startswith("A sunrise")


def test_other_users_see_nothing(client: Client, service: ServiceProcess, peers: FakePeers) -> None:
    created = create(client, generate_step())
    queued = run(client, created)
    stranger = Client(service.address, "stranger")
    for call, request in [
        (stranger.GetPipeline, pb.GetPipelineRequest(name=created.name)),
        (stranger.GetPipelineRun, pb.GetPipelineRunRequest(name=queued.name)),
        (stranger.RunPipeline, pb.RunPipelineRequest(name=created.name)),
        (stranger.CancelPipelineRun, pb.CancelPipelineRunRequest(name=queued.name)),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert not stranger.ListPipelineRuns(pb.ListPipelineRunsRequest(parent="pipelines/-")).runs
    stranger.close()


def test_history_is_newest_first_paginated_and_filtered(client: Client, peers: FakePeers) -> None:
    first = create(client, generate_step(), name="one")
    second = create(client, generate_step(), name="two")
    names = [run(client, first).name, run(client, second).name, run(client, first).name]
    for name in names:
        client.wait_run(name)

    seen: list[str] = []
    token = ""
    while True:
        page = client.ListPipelineRuns(pb.ListPipelineRunsRequest(parent="pipelines/-", page_size=2, page_token=token))
        seen.extend(r.name for r in page.runs)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(names))

    only_first = client.ListPipelineRuns(pb.ListPipelineRunsRequest(parent=first.name)).runs
    assert [r.name for r in only_first] == [names[2], names[0]]
    failed = client.ListPipelineRuns(
        pb.ListPipelineRunsRequest(parent="pipelines/-", state=pb.PIPELINE_RUN_STATE_FAILED)
    ).runs
    assert not failed
    later = client.ListPipelineRuns(
        pb.ListPipelineRunsRequest(parent="pipelines/-", create_time_after=only_first[0].create_time)
    ).runs
    assert [r.name for r in later] == [names[2]]
    with pytest.raises(grpc.RpcError) as caught:
        client.ListPipelineRuns(pb.ListPipelineRunsRequest(parent=first.name, page_token="forged"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_process_pending_once_drains_queued_runs_and_exits(
    start_service: Callable[..., ServiceProcess], own_database_url: str, peers: FakePeers, user: str
) -> None:
    # An API-only replica queues the runs; nothing executes them until the batch command.
    api = start_pipelines(start_service, own_database_url, peers, PIPELINES_WORKER_ENABLED="0")
    client = Client(api.address, user)
    pipeline = create(client, generate_step(), post_step([peers.add_connection(user)]))
    names = [run(client, pipeline).name for _ in range(3)]
    assert {client.GetPipelineRun(pb.GetPipelineRunRequest(name=n)).run.state for n in names} == {
        pb.PIPELINE_RUN_STATE_QUEUED
    }

    env = {
        **os.environ,
        **api.env,
        **FAST_ENGINE,
        **peers.env(),
        "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
    }
    done = subprocess.run(
        [sys.executable, "-m", "contentpipe.pipelines", "process-pending", "--once"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "processed 3 run(s)" in done.stdout
    states = {client.GetPipelineRun(pb.GetPipelineRunRequest(name=n)).run.state for n in names}
    assert states == {pb.PIPELINE_RUN_STATE_SUCCEEDED}
    client.close()


def test_a_run_queued_on_an_api_replica_wakes_the_worker_replica_over_notify(
    start_service: Callable[..., ServiceProcess],
    own_database_url: str,
    database_backend: str,
    peers: FakePeers,
    user: str,
) -> None:
    if database_backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; on SQLite one process wakes its own worker")
    # An hour between claims on the worker replica: only the notification from the API replica can start the run.
    start_pipelines(start_service, own_database_url, peers, PIPELINES_CLAIM_INTERVAL_SECONDS="3600")
    api = start_pipelines(start_service, own_database_url, peers, PIPELINES_WORKER_ENABLED="0")
    client = Client(api.address, user)
    pipeline = create(client, generate_step(), post_step([peers.add_connection(user)]))

    queued = run(client, pipeline)

    assert client.wait_run(queued.name, timeout=20).state == pb.PIPELINE_RUN_STATE_SUCCEEDED
    client.close()


def test_create_is_idempotent_per_request_id_and_validate_only_creates_nothing(client: Client) -> None:
    pipeline = pb.Pipeline(display_name="once", steps=[generate_step()])
    checked = client.CreatePipeline(pb.CreatePipelineRequest(pipeline=pipeline, validate_only=True)).pipeline
    assert checked.display_name == "once"
    assert not client.ListPipelines(pb.ListPipelinesRequest()).pipelines

    first = client.CreatePipeline(pb.CreatePipelineRequest(pipeline=pipeline, request_id="create-1")).pipeline
    again = client.CreatePipeline(pb.CreatePipelineRequest(pipeline=pipeline, request_id="create-1")).pipeline
    assert again.name == first.name
    listed = client.ListPipelines(pb.ListPipelinesRequest()).pipelines
    assert [p.name for p in listed] == [first.name]
    assert listed[0].state == pb.PIPELINE_STATE_ACTIVE and listed[0].owner == client.user
