"""Runs through the real pipelines server (a subprocess) against fake peers: success, retries, failures, resume."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from tests.pipelines.fakes import FakePeers
from tests.pipelines.integration.support import (
    Client,
    create,
    generate_step,
    post_step,
    run,
    schedule_step,
    start_pipelines,
)
from tests.support import ServiceProcess, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def peers() -> Iterator[FakePeers]:
    with FakePeers() as fakes:
        yield fakes


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(
    start_service: Callable[..., ServiceProcess], database_url: str, peers: FakePeers, user: str
) -> Iterator[Client]:
    service = start_pipelines(start_service, database_url, peers)
    client = Client(service.address, user)
    yield client
    client.close()


def test_generate_post_schedule_run_succeeds_with_outputs_and_history(
    client: Client, peers: FakePeers, user: str
) -> None:
    connection = peers.add_connection(user)
    pipeline = create(client, generate_step(), post_step([connection]), schedule_step())
    queued = run(client, pipeline, request_id="manual-1")
    assert queued.state == pb.PIPELINE_RUN_STATE_QUEUED
    assert queued.pipeline_revision == 1

    finished = client.wait_run(queued.name)

    assert finished.state == pb.PIPELINE_RUN_STATE_SUCCEEDED, finished
    video, post, schedule = finished.steps
    assert [s.state for s in finished.steps] == [pb.STEP_RUN_STATE_SUCCEEDED] * 3
    assert video.outputs.generation.startswith("generations/")
    assert video.outputs.assets[0].content_type == "video/mp4"
    assert video.children == [video.outputs.generation]
    assert len(post.targets) == 1 and post.targets[0].post_state == post_pb.POST_STATE_PUBLISHED
    assert post.outputs.posts == [post.targets[0].post]
    created = peers.state.posts[post.targets[0].post]
    assert created.text == f"Daily video: {video.outputs.assets[0].uri}"
    assert created.media[0].uri == video.outputs.assets[0].uri
    assert schedule.outputs.job == f"jobs/pipeline-{pipeline.name.split('/')[1]}"
    assert schedule.outputs.HasField("next_run_time")
    job = peers.state.jobs[schedule.outputs.job]
    assert (job.cron.expression, job.cron.time_zone) == ("0 9 * * *", "Europe/Berlin")
    # The prompt template was rendered with the trigger date.
    generation = peers.state.generations[video.outputs.generation]
    assert generation.prompt == f"A sunrise over {finished.trigger.trigger_time.ToDatetime().date().isoformat()}"

    # Same request id: the same run, not a second one.
    assert run(client, pipeline, request_id="manual-1").name == queued.name
    history = client.ListPipelineRuns(pb.ListPipelineRunsRequest(parent="pipelines/-")).runs
    assert [r.name for r in history] == [queued.name]


def test_generation_failing_twice_succeeds_on_third_attempt(client: Client, peers: FakePeers, user: str) -> None:
    peers.behaviour.generation_failures = 2
    connection = peers.add_connection(user)
    pipeline = create(client, generate_step(), post_step([connection]))

    finished = client.wait_run(run(client, pipeline).name)

    assert finished.state == pb.PIPELINE_RUN_STATE_SUCCEEDED, finished
    video = finished.steps[0]
    assert video.attempts == 3
    assert len(video.children) == 3
    assert sum(1 for g in peers.state.generations.values() if g.owner == user) == 3
    assert len(peers.posts_for(connection)) == 1


def test_generation_failing_more_than_the_policy_allows_fails_the_run(
    client: Client, peers: FakePeers, user: str
) -> None:
    peers.behaviour.generation_failures = 5
    pipeline = create(client, generate_step(), post_step([peers.add_connection(user)]))

    finished = client.wait_run(run(client, pipeline).name)

    assert finished.state == pb.PIPELINE_RUN_STATE_FAILED
    assert finished.steps[0].attempts == 3
    assert finished.error.error_class == pb.STEP_ERROR_CLASS_RETRYABLE
    assert finished.error.reason == "PROVIDER_FAILED"
    assert "step 'video'" in finished.error.message
    assert finished.steps[1].state == pb.STEP_RUN_STATE_PENDING


@pytest.mark.parametrize("mode", ["reauth", "reauth_sync"])
def test_connection_needing_reauth_fails_the_run_at_once(
    client: Client, peers: FakePeers, user: str, mode: str
) -> None:
    connection = peers.add_connection(user)
    peers.behaviour.connection_mode[connection] = mode
    pipeline = create(client, generate_step(), post_step([connection]))

    finished = client.wait_run(run(client, pipeline).name)

    assert finished.state == pb.PIPELINE_RUN_STATE_FAILED
    assert finished.error.error_class == pb.STEP_ERROR_CLASS_NEEDS_REAUTH
    post = finished.steps[1]
    assert post.attempts == 1  # not retried
    assert post.targets[0].error.error_class == pb.STEP_ERROR_CLASS_NEEDS_REAUTH
    assert "again" in finished.error.message


def test_one_failed_target_keeps_the_other_published_and_resume_posts_only_to_it(
    client: Client, peers: FakePeers, user: str
) -> None:
    good = peers.add_connection(user)
    bad = peers.add_connection(user, platform_pb2.PLATFORM_TWITTER)
    peers.behaviour.connection_mode[bad] = "reject"
    pipeline = create(client, generate_step(), post_step([good, bad]))

    failed = client.wait_run(run(client, pipeline).name)

    assert failed.state == pb.PIPELINE_RUN_STATE_FAILED
    assert failed.error.error_class == pb.STEP_ERROR_CLASS_PERMANENT
    good_target, bad_target = failed.steps[1].targets
    assert good_target.post_state == post_pb.POST_STATE_PUBLISHED and good_target.permalink
    assert bad_target.post_state == post_pb.POST_STATE_FAILED
    assert bad_target.error.reason == "TEXT_TOO_LONG"

    peers.behaviour.connection_mode[bad] = "publish"
    resumed = client.ResumePipelineRun(pb.ResumePipelineRunRequest(name=failed.name, request_id="resume-1")).run
    assert resumed.trigger.kind == pb.RUN_TRIGGER_KIND_RESUME
    assert resumed.trigger.resumed_run == failed.name
    again = client.ResumePipelineRun(pb.ResumePipelineRunRequest(name=failed.name, request_id="resume-1")).run
    assert again.name == resumed.name
    finished = client.wait_run(resumed.name)

    assert finished.state == pb.PIPELINE_RUN_STATE_SUCCEEDED, finished
    assert finished.steps[0].state == pb.STEP_RUN_STATE_REUSED
    assert finished.steps[0].outputs.generation == failed.steps[0].outputs.generation
    assert len(peers.state.generations) == 1
    assert len(peers.posts_for(good)) == 1  # no second post to the target that already had one
    assert len(peers.posts_for(bad)) == 2
    targets = finished.steps[1].targets
    assert targets[0].post == good_target.post
    assert [t.post_state for t in targets] == [post_pb.POST_STATE_PUBLISHED] * 2


def test_paused_pipeline_refuses_runs(client: Client, peers: FakePeers, user: str) -> None:
    pipeline = create(client, generate_step())
    pipeline.state = pb.PIPELINE_STATE_PAUSED
    client.UpdatePipeline(
        pb.UpdatePipelineRequest(pipeline=pipeline, update_mask={"paths": ["state"]})  # type: ignore[arg-type]
    )
    with pytest.raises(grpc.RpcError) as caught:
        run(client, pipeline)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_cancel_stops_the_run_and_cancels_the_generation(client: Client, peers: FakePeers, user: str) -> None:
    peers.behaviour.generation_seconds = 60
    pipeline = create(client, generate_step(), post_step([peers.add_connection(user)]))
    queued = run(client, pipeline)
    deadline = time.monotonic() + 10
    while not peers.state.generations and time.monotonic() < deadline:
        time.sleep(0.05)

    canceled = client.CancelPipelineRun(pb.CancelPipelineRunRequest(name=queued.name)).run

    assert canceled.state == pb.PIPELINE_RUN_STATE_CANCELED
    assert [s.state for s in canceled.steps] == [pb.STEP_RUN_STATE_CANCELED, pb.STEP_RUN_STATE_CANCELED]
    assert peers.state.canceled == [canceled.steps[0].children[0]]
    assert not peers.state.posts


def test_deleting_a_pipeline_cancels_its_runs_in_flight_and_their_children(
    client: Client, peers: FakePeers, user: str
) -> None:
    peers.behaviour.generation_seconds = 60
    pipeline = create(client, generate_step())
    queued = run(client, pipeline)
    deadline = time.monotonic() + 10
    while not peers.state.generations and time.monotonic() < deadline:
        time.sleep(0.05)

    client.DeletePipeline(pb.DeletePipelineRequest(name=pipeline.name))

    (generation,) = peers.state.generations
    assert peers.state.canceled == [generation]
    with pytest.raises(grpc.RpcError) as caught:
        client.GetPipelineRun(pb.GetPipelineRunRequest(name=queued.name))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_run_names_the_trace_of_the_call_that_queued_it(client: Client, peers: FakePeers, user: str) -> None:
    pipeline = create(client, generate_step())
    trace_id = uuid.uuid4().hex
    metadata = (*bearer(user), ("traceparent", f"00-{trace_id}-{'1' * 16}-01"))
    request = pb.RunPipelineRequest(name=pipeline.name)
    queued = client.stub.RunPipeline(request, metadata=metadata, timeout=15).run
    assert queued.trace_id == trace_id
    assert client.GetPipelineRun(pb.GetPipelineRunRequest(name=queued.name)).run.trace_id == trace_id


def test_a_batch_queues_each_request_as_run_pipeline_would_and_answers_for_each(
    client: Client, peers: FakePeers, user: str
) -> None:
    ready = create(client, generate_step())
    paused = create(client, generate_step(), name="Paused")
    paused.state = pb.PIPELINE_STATE_PAUSED
    client.UpdatePipeline(
        pb.UpdatePipelineRequest(pipeline=paused, update_mask={"paths": ["state"]})  # type: ignore[arg-type]
    )
    nominal = Timestamp(seconds=1_800_000_000)
    batch = pb.BatchRunPipelinesRequest(
        requests=[
            pb.RunPipelineRequest(name=ready.name, request_id="b-1"),
            pb.RunPipelineRequest(name=ready.name, request_id="b-2", job="jobs/j1", nominal_time=nominal),
            pb.RunPipelineRequest(name=paused.name, request_id="b-3"),
            pb.RunPipelineRequest(name="pipelines/nope", request_id="b-4"),
            pb.RunPipelineRequest(name="jobs/j1", request_id="b-5"),
            pb.RunPipelineRequest(name=ready.name, request_id="x" * 129),
        ]
    )

    results = client.BatchRunPipelines(batch).results

    assert [r.WhichOneof("result") for r in results] == ["run", "run", "error", "error", "error", "error"]
    first, second = results[0].run, results[1].run
    assert first.state == second.state == pb.PIPELINE_RUN_STATE_QUEUED
    assert first.name != second.name and first.name.startswith(f"{ready.name}/runs/")
    assert second.trigger.job == "jobs/j1" and second.trigger.nominal_time == nominal
    errors = [(r.error.code, r.error.reason) for r in results[2:]]
    assert errors == [
        (grpc.StatusCode.FAILED_PRECONDITION.value[0], "PIPELINE_PAUSED"),
        (grpc.StatusCode.NOT_FOUND.value[0], "PIPELINE_NOT_FOUND"),
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "INVALID_ARGUMENT"),
        (grpc.StatusCode.INVALID_ARGUMENT.value[0], "INVALID_ARGUMENT"),
    ]
    assert results[4].error.message.startswith("requests[4].name: ")
    assert results[5].error.message == "requests[5].request_id: at most 128 characters"
    # Sent again (a retry after a lost answer): the same runs, no new ones.
    again = client.BatchRunPipelines(batch).results
    assert [again[0].run.name, again[1].run.name] == [first.name, second.name]
    listed = client.ListPipelineRuns(pb.ListPipelineRunsRequest(parent=ready.name)).runs
    assert sorted(r.name for r in listed) == sorted([first.name, second.name])
    assert client.wait_run(first.name).state == pb.PIPELINE_RUN_STATE_SUCCEEDED


@pytest.mark.parametrize(
    ("count", "repeat", "field"),
    [(0, False, "requests"), (501, False, "requests"), (3, True, "requests[2].request_id")],
)
def test_a_malformed_batch_is_refused_as_a_whole(client: Client, count: int, repeat: bool, field: str) -> None:
    pipeline = create(client, generate_step())
    requests = [pb.RunPipelineRequest(name=pipeline.name, request_id=f"m-{i}") for i in range(count)]
    if repeat:
        requests[2].request_id = requests[0].request_id
    with pytest.raises(grpc.RpcError) as caught:
        client.BatchRunPipelines(pb.BatchRunPipelinesRequest(requests=requests))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: ")
    assert not client.ListPipelineRuns(pb.ListPipelineRunsRequest(parent=pipeline.name)).runs
