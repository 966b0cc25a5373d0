"""Run use cases with in-memory fakes: idempotent queuing, paused pipelines, trace context, resume carry-over."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.errors import FailedPrecondition, NotFound
from contentpipe.common.telemetry import span_link_from
from contentpipe.common.workqueue import QueueSettings
from contentpipe.pipelines.domain.model import (
    GenerateContent,
    GenerationKind,
    Pipeline,
    PipelineState,
    PostState,
    PostToPlatform,
    RunState,
    Step,
    StepError,
    StepOutputs,
    StepRun,
    StepState,
    TargetResult,
    TriggerKind,
)
from contentpipe.pipelines.service_layer.engine.core import EngineSettings, child_request_id
from contentpipe.pipelines.service_layer.runs import RunService
from opentelemetry.sdk.trace import TracerProvider

from tests.pipelines.unit.memory import FakePeerServices, MemoryPipelines, MemoryRuns

pytestmark = pytest.mark.unit


def pipeline(state: PipelineState = PipelineState.ACTIVE) -> Pipeline:
    now = datetime.now(UTC)
    steps = (
        Step("video", GenerateContent(kind=GenerationKind.VIDEO, prompt="x")),
        Step("post", PostToPlatform(connections=("connections/a", "connections/b"), media_step_id="video")),
    )
    return Pipeline("p1", "alice", "P", "", state, steps, 4, now, now)


async def service(state: PipelineState = PipelineState.ACTIVE) -> tuple[RunService, MemoryRuns, list[int]]:
    pipelines = MemoryPipelines()
    await pipelines.add(pipeline(state), "")
    runs = MemoryRuns()
    woken: list[int] = []
    svc = RunService(
        pipelines,
        runs,
        FakePeerServices().peers(),
        EngineSettings(QueueSettings(owner="api")),
        on_queued=lambda: woken.append(1),
    )
    return svc, runs, woken


async def test_run_is_queued_pinned_and_idempotent_per_request_id() -> None:
    svc, runs, woken = await service()
    first = await svc.run("alice", "p1", "job-1@t", job="jobs/j", nominal_time=datetime(2026, 1, 1, tzinfo=UTC))
    again = await svc.run("alice", "p1", "job-1@t", job="jobs/j")

    assert again.id == first.id and len(runs.rows) == 1
    assert first.state == RunState.QUEUED and first.pipeline_revision == 4
    assert first.trigger.kind == TriggerKind.SCHEDULE and first.trigger.job == "jobs/j"
    assert [s.state for s in first.steps] == [StepState.PENDING, StepState.PENDING]
    assert woken == [1]
    with pytest.raises(NotFound):
        await svc.run("mallory", "p1", "")


async def test_paused_pipeline_refuses_runs() -> None:
    svc, _, _ = await service(PipelineState.PAUSED)
    with pytest.raises(FailedPrecondition) as caught:
        await svc.run("alice", "p1", "")
    assert caught.value.reason == "PIPELINE_PAUSED"


async def test_trigger_trace_context_is_stored_for_the_worker_to_link() -> None:
    svc, _, _ = await service()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("RunPipeline") as span:
        queued = await svc.run("alice", "p1", "")
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert trace_id in queued.trace_context["traceparent"]
    link = span_link_from(queued.trace_context)
    assert link is not None and link.context.trace_id == span.get_span_context().trace_id


async def test_resume_reuses_succeeded_steps_and_published_targets() -> None:
    svc, runs, _ = await service()
    queued = await svc.run("alice", "p1", "")
    failed_post = StepRun(
        step_id="post",
        state=StepState.FAILED,
        attempts=3,
        children=("posts/ok", "posts/bad"),
        targets=(
            TargetResult("connections/a", post="posts/ok", post_state=PostState.PUBLISHED, attempt=1),
            TargetResult("connections/b", post="posts/bad", post_state=PostState.FAILED, attempt=3),
        ),
    )
    done_video = StepRun(
        step_id="video",
        state=StepState.SUCCEEDED,
        attempts=1,
        children=("generations/g",),
        outputs=StepOutputs(generation="generations/g"),
    )
    row = runs.rows[queued.id]
    row.run = row.run.with_step(0, done_video).with_step(1, failed_post)
    row.run = replace(row.run, state=RunState.FAILED)

    with pytest.raises(FailedPrecondition):
        await svc.resume("alice", "p1", (await svc.run("alice", "p1", "other")).id, "")
    resumed = await svc.resume("alice", "p1", queued.id, "resume-1")
    assert (await svc.resume("alice", "p1", queued.id, "resume-1")).id == resumed.id

    assert resumed.trigger.kind == TriggerKind.RESUME and resumed.trigger.resumed_run == queued.name
    video, post = resumed.steps
    assert video.state == StepState.REUSED and video.outputs == done_video.outputs
    assert post.state == StepState.PENDING and post.attempts == 0
    assert post.targets[0].post == "posts/ok" and post.targets[0].published
    assert post.targets[1] == TargetResult("connections/b")


async def test_resume_never_creates_again_a_post_that_may_exist() -> None:
    """A create whose answer was lost keeps its key, a post still on its way is waited for: only a FAILED post is
    made anew (a resumed run with its own keys published the same post twice under chaos)."""
    svc, runs, _ = await service()
    queued = await svc.run("alice", "p1", "")
    lost = StepError(ErrorClass.RETRYABLE, "UNAVAILABLE", "creating the post failed")
    failed_post = StepRun(
        step_id="post",
        state=StepState.FAILED,
        attempts=2,
        targets=(
            TargetResult("connections/a", attempt=2, error=lost),  # created or not: nobody knows
            TargetResult("connections/b", post="posts/queued", post_state=PostState.QUEUED, attempt=1),
            TargetResult("connections/c", post="posts/bad", post_state=PostState.FAILED, attempt=1),
            # Named when its attempt started; its create failed: it may exist under that name and key.
            TargetResult("connections/d", post="posts/named", attempt=2, error=lost),
        ),
    )
    done_video = StepRun("video", StepState.SUCCEEDED, 1, outputs=StepOutputs(generation="generations/g"))
    row = runs.rows[queued.id]
    row.run = replace(row.run.with_step(0, done_video).with_step(1, failed_post), state=RunState.FAILED)

    resumed = await svc.resume("alice", "p1", queued.id, "")

    a, b, c, d = resumed.steps[1].targets
    assert a.request_key == child_request_id(queued.id, 1, 2, 0) and not a.post and a.error is None
    assert b.post == "posts/queued" and b.post_state == PostState.QUEUED
    assert b.request_key == child_request_id(queued.id, 1, 1, 1)
    assert c == TargetResult("connections/c")
    assert d.post == "posts/named" and d.request_key == child_request_id(queued.id, 1, 2, 3) and d.error is None


async def _failed_at_post(svc: RunService, runs: MemoryRuns) -> str:
    queued = await svc.run("alice", "p1", "")
    row = runs.rows[queued.id]
    video = StepRun("video", StepState.SUCCEEDED, 1, outputs=StepOutputs(generation="generations/g"))
    post = StepRun(
        "post",
        StepState.FAILED,
        3,
        targets=(
            TargetResult("connections/a", post="posts/ok", post_state=PostState.PUBLISHED, attempt=1),
            TargetResult("connections/b", post="posts/bad", post_state=PostState.FAILED, attempt=3),
        ),
    )
    row.run = replace(row.run.with_step(0, video).with_step(1, post), state=RunState.FAILED)
    return queued.id


async def _edit(svc: RunService, steps: tuple[Step, ...]) -> None:
    stored = svc._pipelines.items["p1"]  # type: ignore[attr-defined]
    svc._pipelines.items["p1"] = replace(stored, steps=steps, revision=stored.revision + 1)  # type: ignore[attr-defined]


async def test_resume_after_a_fix_runs_the_latest_revision_reusing_unchanged_steps() -> None:
    svc, runs, _ = await service()
    failed = await _failed_at_post(svc, runs)
    fixed_post = Step(
        "post",
        PostToPlatform(connections=("connections/a", "connections/b"), media_step_id="video", caption="fixed"),
    )
    await _edit(svc, (pipeline().steps[0], fixed_post))

    same = await svc.resume("alice", "p1", failed, "")
    assert same.pipeline_revision == 4 and same.definition[1].action.caption == ""  # type: ignore[union-attr]

    latest = await svc.resume("alice", "p1", failed, "", use_latest_revision=True)
    assert latest.pipeline_revision == 5 and latest.definition[1] == fixed_post
    video, post = latest.steps
    assert video.state == StepState.REUSED and video.outputs == StepOutputs(generation="generations/g")
    # The changed post step starts again, but the target already published is never published twice.
    assert post.state == StepState.PENDING
    assert post.targets[0].post == "posts/ok" and post.targets[0].published
    assert post.targets[1] == TargetResult("connections/b")


async def test_a_changed_step_reruns_it_and_every_step_after_it() -> None:
    svc, runs, _ = await service()
    failed = await _failed_at_post(svc, runs)
    new_video = Step("video", GenerateContent(kind=GenerationKind.VIDEO, prompt="a better prompt"))
    await _edit(svc, (new_video, pipeline().steps[1]))
    latest = await svc.resume("alice", "p1", failed, "", use_latest_revision=True)
    video, post = latest.steps
    assert video == StepRun("video")  # its outputs feed the post step: both run again
    assert post.targets[0].published and post.targets[1] == TargetResult("connections/b")
