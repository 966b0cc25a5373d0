"""The run engine with in-memory fakes: retries by class, fail-fast, adoption of children, per-user limits."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from contentpipe.common import errors
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.workqueue import QueueSettings
from contentpipe.pipelines.domain.model import (
    GenerateContent,
    GenerationKind,
    PipelineRun,
    PostState,
    PostToPlatform,
    RetryPolicy,
    RunState,
    RunTrigger,
    SchedulePipeline,
    Step,
    StepOutputs,
    StepRun,
    StepState,
    TargetResult,
    TriggerKind,
)
from contentpipe.pipelines.domain.retries import backoff_seconds, classify
from contentpipe.pipelines.service_layer.engine.core import EngineSettings, child_name, child_request_id
from contentpipe.pipelines.service_layer.engine.executor import RunExecutor
from contentpipe.pipelines.service_layer.engine.worker import Worker
from contentpipe.pipelines.service_layer.ports import GenerationRequest, GenerationStatus, PostRequest, PostStatus

from tests.pipelines.unit.memory import FakePeerServices, LostReply, MemoryRuns

pytestmark = pytest.mark.unit

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, multiplier=2.0, max_backoff=0.02)
SETTINGS = EngineSettings(
    QueueSettings(owner="w1", lease_seconds=5, poll_interval=0.01, concurrency=200, claim_batch=200),
    poll_initial=0.001,
    poll_max=0.005,
)


def make_run(*steps: Step, owner: str = "u1", run_id: str = "r1") -> PipelineRun:
    return PipelineRun(
        id=run_id,
        pipeline_id="p1",
        owner=owner,
        pipeline_revision=1,
        pipeline_display_name="Morning",
        state=RunState.QUEUED,
        trigger=RunTrigger(kind=TriggerKind.MANUAL, trigger_time=datetime(2026, 3, 29, 9, tzinfo=UTC)),
        definition=steps,
        steps=tuple(StepRun(step_id=step.id) for step in steps),
        create_time=datetime.now(UTC),
    )


def video(policy: RetryPolicy = FAST) -> Step:
    return Step("video", GenerateContent(kind=GenerationKind.VIDEO, prompt="day {{ run.trigger_date }}"), policy)


def post(*connections: str) -> Step:
    return Step(
        "post",
        PostToPlatform(connections=connections, caption="{{ steps.video.assets[0].uri }}", media_step_id="video"),
        FAST,
    )


async def execute(runs: MemoryRuns, peers: FakePeerServices, run: PipelineRun) -> PipelineRun:
    await runs.add(run)
    (claimed,) = await runs.claim("w1", 1, 5)
    return await RunExecutor(runs, peers.peers(), SETTINGS).execute(claimed)


def failed(retryable: bool) -> GenerationStatus:
    return GenerationStatus(
        name="", state="FAILED", error_reason="PROVIDER_FAILED", error_message="boom", error_retryable=retryable
    )


async def test_retryable_failures_are_retried_up_to_the_policy_with_new_request_ids() -> None:
    peers = FakePeerServices(generation_outcomes=[failed(True), failed(True)])
    runs = MemoryRuns()
    done = await execute(runs, peers, make_run(video(), post("connections/a")))

    assert done.state == RunState.SUCCEEDED
    assert done.steps[0].attempts == 3
    assert sorted(peers.generation_requests) == [child_request_id("r1", 0, n) for n in (1, 2, 3)]
    assert peers.created_posts[0].text == done.steps[0].outputs.assets[0]["uri"]  # type: ignore[union-attr]
    assert peers.created_posts[0].media[0].kind == "VIDEO"


async def test_permanent_failure_is_not_retried() -> None:
    peers = FakePeerServices(generation_outcomes=[failed(False)])
    done = await execute(MemoryRuns(), peers, make_run(video(), post("connections/a")))

    assert done.state == RunState.FAILED
    assert done.steps[0].attempts == 1
    assert done.error is not None and done.error.error_class == ErrorClass.PERMANENT
    assert done.steps[1].state == StepState.PENDING
    assert not peers.created_posts


async def test_invalid_argument_from_the_peer_is_permanent_and_unavailable_is_retried() -> None:
    peers = FakePeerServices(generation_outcomes=[errors.Unavailable("down"), errors.InvalidArgument("bad prompt")])
    done = await execute(MemoryRuns(), peers, make_run(video()))

    assert done.state == RunState.FAILED
    assert done.steps[0].attempts == 2
    assert done.error is not None and done.error.error_class == ErrorClass.PERMANENT
    assert "bad prompt" in done.error.message and "'video'" in done.error.message


async def test_needs_reauth_on_one_target_fails_at_once_and_keeps_the_other_published() -> None:
    peers = FakePeerServices(
        post_outcomes={"connections/b": [errors.FailedPrecondition("reauth", reason="CONNECTION_NEEDS_REAUTH")]}
    )
    done = await execute(MemoryRuns(), peers, make_run(video(), post("connections/a", "connections/b")))

    assert done.state == RunState.FAILED
    assert done.error is not None and done.error.error_class == ErrorClass.NEEDS_REAUTH
    assert done.steps[1].attempts == 1
    first, second = done.steps[1].targets
    assert first.post_state == PostState.PUBLISHED
    assert second.error is not None and second.error.error_class == ErrorClass.NEEDS_REAUTH
    assert "1 of 2 target(s) published" in done.error.message


async def test_retryable_post_failure_retries_only_the_failed_target() -> None:
    peers = FakePeerServices(post_outcomes={"connections/b": [(PostState.FAILED, ErrorClass.RETRYABLE)]})
    done = await execute(MemoryRuns(), peers, make_run(video(), post("connections/a", "connections/b")))

    assert done.state == RunState.SUCCEEDED
    assert done.steps[1].attempts == 2
    assert [p.connection for p in peers.created_posts] == ["connections/a", "connections/b", "connections/b"]
    assert len(done.steps[1].children) == 3
    assert len(done.steps[1].outputs.posts) == 2  # type: ignore[union-attr]


async def test_a_post_created_before_unavailable_is_adopted_by_the_retry_not_posted_again() -> None:
    # Target b's post is created and published, but attempt 1 only sees UNAVAILABLE.
    peers = FakePeerServices(post_outcomes={"connections/b": [LostReply(errors.Unavailable("reply lost"))]})
    done = await execute(MemoryRuns(), peers, make_run(video(), post("connections/a", "connections/b")))

    assert done.state == RunState.SUCCEEDED
    assert done.steps[1].attempts == 2
    assert [p.connection for p in peers.created_posts] == ["connections/a", "connections/b"]
    assert sorted(peers.post_requests) == [child_request_id("r1", 1, 1, 0), child_request_id("r1", 1, 1, 1)]
    assert sorted(done.steps[1].children) == sorted(peers.posts)
    assert all(target.published for target in done.steps[1].targets)


async def test_a_post_that_failed_retryably_then_lost_the_next_reply_keeps_one_post_per_key() -> None:
    peers = FakePeerServices(
        post_outcomes={
            "connections/a": [(PostState.FAILED, ErrorClass.RETRYABLE), LostReply(errors.DeadlineExceeded("slow"))]
        }
    )
    done = await execute(MemoryRuns(), peers, make_run(video(), post("connections/a")))

    assert done.state == RunState.SUCCEEDED
    assert done.steps[1].attempts == 3
    # One new post after the retryable failure (key a2), adopted by attempt 3 instead of a third post.
    assert sorted(peers.post_requests) == [child_request_id("r1", 1, 1, 0), child_request_id("r1", 1, 2, 0)]
    assert len(peers.created_posts) == 2
    assert sorted(done.steps[1].children) == sorted(peers.posts)


async def test_a_generation_created_before_unavailable_is_adopted_by_the_retry() -> None:
    peers = FakePeerServices(generation_outcomes=[LostReply(errors.Unavailable("reply lost"))])
    done = await execute(MemoryRuns(), peers, make_run(video()))

    assert done.state == RunState.SUCCEEDED
    assert done.steps[0].attempts == 2
    assert list(peers.generation_requests) == [child_request_id("r1", 0, 1)]
    assert done.steps[0].outputs is not None and done.steps[0].outputs.generation in peers.generations
    assert len(peers.generations) == 1


async def test_each_child_is_named_by_the_write_that_starts_its_attempt_before_it_is_created() -> None:
    peers, runs = FakePeerServices(), MemoryRuns()
    listed_at_create: list[bool] = []
    wired = peers.peers()
    generations, posts = wired.generations, wired.posts
    create_generation, create_post = generations.create, posts.create

    async def generation_create(
        owner: str, request: GenerationRequest, request_id: str, name: str = ""
    ) -> GenerationStatus:
        listed_at_create.append(name in runs.rows["r1"].run.steps[0].children)
        return await create_generation(owner, request, request_id, name)

    async def post_create(owner: str, request: PostRequest, request_id: str, name: str = "") -> PostStatus:
        listed_at_create.append(name in runs.rows["r1"].run.steps[1].children)
        return await create_post(owner, request, request_id, name)

    generations.create = generation_create  # type: ignore[method-assign]
    posts.create = post_create  # type: ignore[method-assign]
    await runs.add(make_run(video(), post("connections/a", "connections/b")))
    (claimed,) = await runs.claim("w1", 1, 5)
    done = await RunExecutor(runs, wired, SETTINGS).execute(claimed)

    assert done.state == RunState.SUCCEEDED
    # Already in the stored run when each of the three creates was sent, with the names the children got.
    assert listed_at_create == [True, True, True]
    assert list(done.steps[0].children) == list(peers.generations)
    assert sorted(done.steps[1].children) == sorted(peers.posts)
    assert done.steps[0].children == (child_name("generations", "u1", child_request_id("r1", 0, 1)),)
    # Step 1's start (with its generation's name), step 1's end with step 2's start (and its posts' names), the end.
    assert runs.saves == 3


async def test_a_child_named_by_a_worker_that_died_before_creating_it_is_created_under_its_key() -> None:
    peers, runs = FakePeerServices(), MemoryRuns()
    key = child_request_id("r1", 0, 1)
    name = child_name("generations", "u1", key)
    run = make_run(video()).with_step(
        0,
        StepRun(
            step_id="video", state=StepState.RUNNING, attempts=1, children=(name,), current_child=name, child_attempt=1
        ),
    )
    done = await execute(runs, peers, run)

    assert done.state == RunState.SUCCEEDED
    assert peers.generation_requests == {key: name}
    assert done.steps[0].outputs is not None and done.steps[0].outputs.generation == name


async def test_a_resumed_run_creates_a_carried_over_post_under_the_key_and_name_of_the_failed_run() -> None:
    peers, runs = FakePeerServices(), MemoryRuns()
    key = child_request_id("old-run", 1, 2, 0)
    name = child_name("posts", "u1", key)
    outputs = StepOutputs(generation="generations/g", assets=({"uri": "file:///g.mp4"},))
    video_done = StepRun("video", StepState.SUCCEEDED, 1, outputs=outputs)
    carried = StepRun(
        "post", targets=(TargetResult("connections/a", post=name, attempt=2, request_key=key),), children=(name,)
    )
    done = await execute(
        runs, peers, make_run(video(), post("connections/a")).with_step(0, video_done).with_step(1, carried)
    )

    assert done.state == RunState.SUCCEEDED
    assert peers.post_requests == {key: name}
    assert done.steps[1].children == (name,) and done.steps[1].targets[0].published


async def test_a_step_that_gives_up_on_its_generation_lists_it_and_cancels_it() -> None:
    # The generation is made, but its create's answer is an error that ends the step (no retry).
    peers = FakePeerServices(generation_outcomes=[LostReply(errors.InvalidArgument("refused after all"))])
    peers.generation_outcomes.append(GenerationStatus(name="", state="RUNNING"))
    done = await execute(MemoryRuns(), peers, make_run(video()))

    assert done.state == RunState.FAILED
    (name,) = peers.generations
    assert done.steps[0].children == (name,)
    assert peers.generations[name].state == "CANCELED"


async def test_a_step_that_fails_lists_no_child_whose_create_never_made_it() -> None:
    # Target a's create is refused before anything is made, target b's post fails for good: the step fails with
    # b's post listed and no name for a post that does not exist.
    peers = FakePeerServices(
        generation_outcomes=[errors.InvalidArgument("no such model")],
    )
    done = await execute(MemoryRuns(), peers, make_run(video()))
    assert done.state == RunState.FAILED
    assert done.steps[0].children == () and done.steps[0].current_child == ""

    peers = FakePeerServices(
        post_outcomes={
            "connections/a": [errors.Unavailable("connection refused")],
            "connections/b": [(PostState.FAILED, ErrorClass.PERMANENT)],
        }
    )
    done = await execute(MemoryRuns(), peers, make_run(video(), post("connections/a", "connections/b")))
    assert done.state == RunState.FAILED
    a, b = done.steps[1].targets
    assert a.post == "" and a.attempt == 1 and a.error is not None
    assert list(done.steps[1].children) == [b.post] == list(peers.posts)


async def test_a_resumed_attempt_adopts_its_child_instead_of_creating_another() -> None:
    peers = FakePeerServices()
    runs = MemoryRuns()
    run = make_run(video())
    # A worker died after creating the generation and saving its name.
    name = "generations/existing"
    peers.generations[name] = GenerationStatus(name=name, state="SUCCEEDED", assets=({"uri": "file:///x.mp4"},))
    run = run.with_step(
        0, StepRun(step_id="video", state=StepState.RUNNING, attempts=1, children=(name,), current_child=name)
    )
    done = await execute(runs, peers, run)

    assert done.state == RunState.SUCCEEDED
    assert done.steps[0].outputs is not None and done.steps[0].outputs.generation == name
    assert peers.generation_requests == {}


async def test_schedule_step_upserts_the_pipelines_job() -> None:
    peers = FakePeerServices()
    step = Step("next", SchedulePipeline(delay_seconds=3600))
    done = await execute(MemoryRuns(), peers, make_run(step))

    assert done.state == RunState.SUCCEEDED
    (spec,) = peers.jobs
    assert spec.job_id == "pipeline-p1" and spec.pipeline == "pipelines/p1" and spec.run_time is not None
    assert done.steps[0].outputs is not None and done.steps[0].outputs.job == "jobs/pipeline-p1"
    assert done.steps[0].planned_run_time == spec.run_time


async def test_lost_lease_stops_the_executor_without_overwriting() -> None:
    runs = MemoryRuns()
    run = make_run(video())
    await runs.add(run)
    (claimed,) = await runs.claim("w1", 1, 5)
    await runs.release([run.id], "w1")
    await runs.claim("w2", 1, 5)
    from contentpipe.pipelines.service_layer.ports import LeaseLost

    with pytest.raises(LeaseLost):
        await RunExecutor(runs, FakePeerServices().peers(), SETTINGS).execute(claimed)
    assert runs.rows[run.id].run.state == RunState.QUEUED


async def test_per_user_limit_leaves_room_for_other_users() -> None:
    stuck = GenerationStatus(name="", state="RUNNING")
    peers = FakePeerServices(generation_outcomes=[stuck] * 10)
    runs = MemoryRuns()
    for index in range(5):
        await runs.add(make_run(video(), owner="greedy", run_id=f"a{index}"))
    await runs.add(make_run(video(), owner="modest", run_id="b0"))
    worker = Worker(
        runs,
        peers.peers(),
        EngineSettings(
            QueueSettings(owner="w1", poll_interval=0.01, concurrency=10, claim_batch=10),
            max_per_user=2,
            poll_initial=0.01,
            poll_max=0.01,
        ),
    )

    loop = asyncio.create_task(worker.run_forever())
    try:
        # Several claim rounds pass (the poll interval is short) and no more runs start.
        for _ in range(5):
            worker.queue.idle.clear()
            await asyncio.wait_for(worker.queue.idle.wait(), timeout=5)
        owners = sorted(runs.rows[run_id].run.owner for run_id in worker.queue.running())
        assert owners == ["greedy", "greedy", "modest"]
        # The surplus runs were given back at once, for other replicas.
        free = [row for row in runs.rows.values() if row.lease_owner is None]
        assert len(free) == 3
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


def test_backoff_is_full_jitter_capped() -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff=1.0, multiplier=2.0, max_backoff=3.0)
    rng = random.Random(7)
    samples = [backoff_seconds(policy, 3, rng) for _ in range(500)]
    assert 0 <= min(samples) < 0.2 and 2.8 < max(samples) <= 3.0
    assert max(backoff_seconds(policy, 1, rng) for _ in range(200)) <= 1.0


def test_classification_of_peer_errors() -> None:
    assert classify(errors.Unavailable("x")) == ErrorClass.RETRYABLE
    assert classify(errors.ResourceExhausted("x")) == ErrorClass.RATE_LIMITED
    assert classify(errors.InvalidArgument("x")) == ErrorClass.PERMANENT
    assert classify(errors.NotFound("x")) == ErrorClass.PERMANENT
    assert classify(errors.FailedPrecondition("x", reason="CONNECTION_REVOKED")) == ErrorClass.NEEDS_REAUTH


class FlakyRuns(MemoryRuns):
    """The database fails one save (locked past its busy timeout, failover, ...)."""

    def __init__(self, fail_on_save: int) -> None:
        super().__init__()
        self.fail_on_save = fail_on_save
        self.calls = 0

    async def save(self, run: PipelineRun, lease_owner: str) -> None:
        self.calls += 1
        if self.calls == self.fail_on_save:
            raise errors.Unavailable("database is locked", reason="DATABASE_UNAVAILABLE")
        await super().save(run, lease_owner)


async def test_a_database_hiccup_gives_the_run_back_and_it_continues_without_a_second_child() -> None:
    peers = FakePeerServices()
    runs = FlakyRuns(fail_on_save=3)  # after the generation was created and its name saved
    await runs.add(make_run(video(), post("connections/a")))
    worker = Worker(runs, peers.peers(), SETTINGS)

    assert await worker.drain() == 2  # executed twice: given back once, then finished

    (row,) = runs.rows.values()
    assert row.run.state == RunState.SUCCEEDED
    assert len(peers.generation_requests) == 1 and len(peers.created_posts) == 1


async def test_a_cancel_ends_a_long_wait_for_a_child_at_once_and_cancels_the_child() -> None:
    runs, fake = MemoryRuns(), FakePeerServices()
    peers = fake.peers()
    waiting, abandoned = asyncio.Event(), asyncio.Event()

    async def wait_forever(owner: str, name: str, max_wait: float) -> GenerationStatus:
        assert max_wait == SETTINGS.child_wait
        waiting.set()
        try:
            await asyncio.Event().wait()  # a long poll whose generation never finishes
        except asyncio.CancelledError:
            abandoned.set()
            raise
        raise AssertionError("unreachable")

    peers.generations.wait = wait_forever  # type: ignore[method-assign]
    fake.generation_outcomes = [GenerationStatus(name="", state="RUNNING")]
    await runs.add(make_run(video()))
    (claimed,) = await runs.claim("w1", 1, 5)
    cancel = asyncio.Event()
    execution = asyncio.create_task(RunExecutor(runs, peers, SETTINGS, cancel).execute(claimed))
    await waiting.wait()
    cancel.set()
    final = await asyncio.wait_for(execution, timeout=10)
    assert final.state == RunState.CANCELED
    assert abandoned.is_set()
    assert fake.generations[final.steps[0].children[0]].state == "CANCELED"  # the child was cancelled too
