"""Translation between the v1 protobuf messages and the domain model; shared by the gRPC entrypoint and the adapters."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.telemetry import trace_id_from
from contentpipe.pipelines.domain.model import (
    GenerateContent,
    GenerationKind,
    Pipeline,
    PipelineRun,
    PipelineState,
    PostState,
    PostToPlatform,
    RetryPolicy,
    RunState,
    RunTrigger,
    SchedulePipeline,
    Step,
    StepError,
    StepOutputs,
    StepRun,
    StepState,
    TargetResult,
    TriggerKind,
)
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def from_dict(data: Mapping[str, Any], message: Message) -> Message:
    return json_format.ParseDict(dict(data), message, ignore_unknown_fields=True)


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def dt(stamp: Timestamp, present: bool = True, *, field: str = "") -> datetime | None:
    """A Timestamp as an aware UTC datetime; an out-of-range one from a request is InvalidArgument on `field`."""
    if not present:
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.single(field or "timestamp", "not a valid timestamp") from None


def _seconds(duration: Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


# ---------------------------------------------------------------- steps

_GEN_KIND = {
    gen_pb.GENERATION_KIND_VIDEO: GenerationKind.VIDEO,
    gen_pb.GENERATION_KIND_IMAGE: GenerationKind.IMAGE,
    gen_pb.GENERATION_KIND_TEXT: GenerationKind.TEXT,
}
_GEN_KIND_PB = {value: key for key, value in _GEN_KIND.items()}


def generation_kind_pb(kind: GenerationKind) -> int:
    return _GEN_KIND_PB[kind]


def step_from_proto(message: pb.Step, index: int = 0) -> Step:
    policy: RetryPolicy | None = None
    if message.HasField("retry_policy"):
        raw = message.retry_policy
        policy = RetryPolicy(
            max_attempts=raw.max_attempts,
            initial_backoff=_seconds(raw.initial_backoff) if raw.HasField("initial_backoff") else None,
            multiplier=raw.backoff_multiplier,
            max_backoff=_seconds(raw.max_backoff) if raw.HasField("max_backoff") else None,
        )
    which = message.WhichOneof("action")
    action: GenerateContent | PostToPlatform | SchedulePipeline | None = None
    if which == "generate_content":
        generate = message.generate_content
        action = GenerateContent(
            kind=_GEN_KIND.get(generate.kind),
            prompt=generate.prompt,
            options=to_dict(generate.options) if generate.HasField("options") else {},
            provider=generate.provider,
            model=generate.model,
        )
    elif which == "post_to_platform":
        post = message.post_to_platform
        action = PostToPlatform(
            connections=tuple(post.connections),
            caption=post.caption,
            media_step_id=post.media_step_id,
            media_indexes=tuple(post.media_indexes),
            options=to_dict(post.options) if post.HasField("options") else {},
        )
    elif which == "schedule_pipeline":
        schedule = message.schedule_pipeline
        when = schedule.WhichOneof("when")
        action = SchedulePipeline(
            cron_expression=schedule.cron.expression if when == "cron" else None,
            time_zone=schedule.cron.time_zone if when == "cron" else "",
            run_time=dt(schedule.run_time, field=f"pipeline.steps[{index}].schedule_pipeline.run_time")
            if when == "run_time"
            else None,
            delay_seconds=_seconds(schedule.delay) if when == "delay" else None,
        )
    return Step(id=message.id, action=action, retry_policy=policy)


def step_to_proto(step: Step) -> pb.Step:
    message = pb.Step(id=step.id)
    if step.retry_policy is not None:
        policy = step.retry_policy
        message.retry_policy.max_attempts = policy.max_attempts
        message.retry_policy.backoff_multiplier = policy.multiplier
        if policy.initial_backoff is not None:
            message.retry_policy.initial_backoff.CopyFrom(_duration(policy.initial_backoff))
        if policy.max_backoff is not None:
            message.retry_policy.max_backoff.CopyFrom(_duration(policy.max_backoff))
    action = step.action
    if isinstance(action, GenerateContent):
        generate = message.generate_content
        generate.SetInParent()
        if action.kind is not None:
            generate.kind = _GEN_KIND_PB[action.kind]
        generate.prompt = action.prompt
        generate.provider = action.provider
        generate.model = action.model
        if action.options:
            from_dict(action.options, generate.options)
    elif isinstance(action, PostToPlatform):
        post = message.post_to_platform
        post.SetInParent()
        post.connections.extend(action.connections)
        post.caption = action.caption
        post.media_step_id = action.media_step_id
        post.media_indexes.extend(action.media_indexes)
        if action.options:
            from_dict(action.options, post.options)
    elif isinstance(action, SchedulePipeline):
        schedule = message.schedule_pipeline
        schedule.SetInParent()
        if action.cron_expression is not None:
            schedule.cron.expression = action.cron_expression
            schedule.cron.time_zone = action.time_zone
        elif action.run_time is not None:
            schedule.run_time.FromDatetime(action.run_time.astimezone(UTC))
        elif action.delay_seconds is not None:
            schedule.delay.CopyFrom(_duration(action.delay_seconds))
    return message


def steps_to_json(steps: tuple[Step, ...]) -> list[dict[str, Any]]:
    return [to_dict(step_to_proto(step)) for step in steps]


def steps_from_json(data: list[dict[str, Any]]) -> tuple[Step, ...]:
    return tuple(step_from_proto(from_dict(item, pb.Step())) for item in data)  # type: ignore[arg-type]


# ---------------------------------------------------------------- pipelines

PIPELINE_STATE = {pb.PIPELINE_STATE_ACTIVE: PipelineState.ACTIVE, pb.PIPELINE_STATE_PAUSED: PipelineState.PAUSED}
PIPELINE_STATE_PB = {value: key for key, value in PIPELINE_STATE.items()}


def pipeline_to_proto(pipeline: Pipeline) -> pb.Pipeline:
    return pb.Pipeline(
        name=pipeline.name,
        owner=pipeline.owner,
        display_name=pipeline.display_name,
        description=pipeline.description,
        state=PIPELINE_STATE_PB[pipeline.state],
        steps=[step_to_proto(step) for step in pipeline.steps],
        revision=pipeline.revision,
        etag=pipeline.etag,
        create_time=ts(pipeline.create_time),
        update_time=ts(pipeline.update_time),
    )


# ---------------------------------------------------------------- runs

RUN_STATE_PB = {
    RunState.QUEUED: pb.PIPELINE_RUN_STATE_QUEUED,
    RunState.RUNNING: pb.PIPELINE_RUN_STATE_RUNNING,
    RunState.SUCCEEDED: pb.PIPELINE_RUN_STATE_SUCCEEDED,
    RunState.FAILED: pb.PIPELINE_RUN_STATE_FAILED,
    RunState.CANCELED: pb.PIPELINE_RUN_STATE_CANCELED,
}
RUN_STATE = {value: key for key, value in RUN_STATE_PB.items()}
STEP_STATE_PB = {
    StepState.PENDING: pb.STEP_RUN_STATE_PENDING,
    StepState.RUNNING: pb.STEP_RUN_STATE_RUNNING,
    StepState.SUCCEEDED: pb.STEP_RUN_STATE_SUCCEEDED,
    StepState.FAILED: pb.STEP_RUN_STATE_FAILED,
    StepState.CANCELED: pb.STEP_RUN_STATE_CANCELED,
    StepState.REUSED: pb.STEP_RUN_STATE_REUSED,
}
TRIGGER_PB = {
    TriggerKind.MANUAL: pb.RUN_TRIGGER_KIND_MANUAL,
    TriggerKind.SCHEDULE: pb.RUN_TRIGGER_KIND_SCHEDULE,
    TriggerKind.RESUME: pb.RUN_TRIGGER_KIND_RESUME,
}
ERROR_CLASS_PB = {
    ErrorClass.RETRYABLE: pb.STEP_ERROR_CLASS_RETRYABLE,
    ErrorClass.PERMANENT: pb.STEP_ERROR_CLASS_PERMANENT,
    ErrorClass.NEEDS_REAUTH: pb.STEP_ERROR_CLASS_NEEDS_REAUTH,
    ErrorClass.RATE_LIMITED: pb.STEP_ERROR_CLASS_RATE_LIMITED,
    # The step API has no class of its own for content a platform refused: for a run it is a permanent failure.
    ErrorClass.REJECTED_BY_PLATFORM: pb.STEP_ERROR_CLASS_PERMANENT,
}
POST_ERROR_CLASS = {
    post_pb.POST_ERROR_CLASS_RETRYABLE: ErrorClass.RETRYABLE,
    post_pb.POST_ERROR_CLASS_RATE_LIMITED: ErrorClass.RATE_LIMITED,
    post_pb.POST_ERROR_CLASS_NEEDS_REAUTH: ErrorClass.NEEDS_REAUTH,
    post_pb.POST_ERROR_CLASS_REJECTED_BY_PLATFORM: ErrorClass.REJECTED_BY_PLATFORM,
}
POST_STATE_PB = {state: getattr(post_pb, f"POST_STATE_{state.value}") for state in PostState}
POST_STATE = {value: key for key, value in POST_STATE_PB.items()}


def _error_pb(error: StepError | None) -> pb.StepError | None:
    if error is None:
        return None
    return pb.StepError(error_class=ERROR_CLASS_PB[error.error_class], reason=error.reason, message=error.message)


def outputs_to_proto(outputs: StepOutputs | None) -> pb.StepOutputs | None:
    if outputs is None:
        return None
    message = pb.StepOutputs(
        generation=outputs.generation,
        text=outputs.text,
        posts=list(outputs.posts),
        job=outputs.job,
        next_run_time=ts(outputs.next_run_time),
    )
    for asset in outputs.assets:
        from_dict(asset, message.assets.add())
    return message


def run_to_proto(run: PipelineRun) -> pb.PipelineRun:
    trigger = run.trigger
    return pb.PipelineRun(
        name=run.name,
        owner=run.owner,
        pipeline_revision=run.pipeline_revision,
        state=RUN_STATE_PB[run.state],
        trigger=pb.RunTrigger(
            kind=TRIGGER_PB[trigger.kind],
            job=trigger.job,
            nominal_time=ts(trigger.nominal_time),
            resumed_run=trigger.resumed_run,
            trigger_time=ts(trigger.trigger_time),
        ),
        steps=[
            pb.StepRun(
                step_id=step.step_id,
                state=STEP_STATE_PB[step.state],
                attempts=step.attempts,
                start_time=ts(step.start_time),
                finish_time=ts(step.finish_time),
                next_attempt_time=ts(step.next_attempt_time),
                children=list(step.children),
                outputs=outputs_to_proto(step.outputs),
                error=_error_pb(step.error),
                targets=[
                    pb.TargetResult(
                        connection=target.connection,
                        post=target.post,
                        post_state=POST_STATE_PB[target.post_state],
                        permalink=target.permalink,
                        error=_error_pb(target.error),
                    )
                    for target in step.targets
                ],
            )
            for step in run.steps
        ],
        error=_error_pb(run.error),
        create_time=ts(run.create_time),
        start_time=ts(run.start_time),
        finish_time=ts(run.finish_time),
        request_id=run.request_id,
        trace_id=trace_id_from(run.trace_context),
    )


# Storage of a run's progress: plain JSON (the domain's own words), independent of the proto's enums.


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _error_json(error: StepError | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"class": error.error_class.value, "reason": error.reason, "message": error.message}


def _error_from_json(data: Mapping[str, str] | None) -> StepError | None:
    if not data:
        return None
    return StepError(ErrorClass(data["class"]), data["reason"], data["message"])


def step_runs_to_json(steps: tuple[StepRun, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for step in steps:
        outputs = step.outputs
        out.append(
            {
                "step_id": step.step_id,
                "state": step.state.value,
                "attempts": step.attempts,
                "start_time": _iso(step.start_time),
                "finish_time": _iso(step.finish_time),
                "next_attempt_time": _iso(step.next_attempt_time),
                "children": list(step.children),
                "outputs": None
                if outputs is None
                else {
                    "generation": outputs.generation,
                    "assets": [dict(asset) for asset in outputs.assets],
                    "text": outputs.text,
                    "posts": list(outputs.posts),
                    "job": outputs.job,
                    "next_run_time": _iso(outputs.next_run_time),
                },
                "error": _error_json(step.error),
                "targets": [
                    {
                        "connection": target.connection,
                        "post": target.post,
                        "post_state": target.post_state.value,
                        "permalink": target.permalink,
                        "error": _error_json(target.error),
                        "attempt": target.attempt,
                        **({"request_key": target.request_key} if target.request_key else {}),
                    }
                    for target in step.targets
                ],
                "current_child": step.current_child,
                "child_attempt": step.child_attempt,
                "planned_run_time": _iso(step.planned_run_time),
            }
        )
    return out


def step_runs_from_json(data: list[dict[str, Any]]) -> tuple[StepRun, ...]:
    steps: list[StepRun] = []
    for item in data:
        outputs = item.get("outputs")
        steps.append(
            StepRun(
                step_id=item["step_id"],
                state=StepState(item["state"]),
                attempts=int(item["attempts"]),
                start_time=_from_iso(item.get("start_time")),
                finish_time=_from_iso(item.get("finish_time")),
                next_attempt_time=_from_iso(item.get("next_attempt_time")),
                children=tuple(item.get("children", ())),
                outputs=None
                if outputs is None
                else StepOutputs(
                    generation=outputs["generation"],
                    assets=tuple(outputs["assets"]),
                    text=outputs["text"],
                    posts=tuple(outputs["posts"]),
                    job=outputs["job"],
                    next_run_time=_from_iso(outputs.get("next_run_time")),
                ),
                error=_error_from_json(item.get("error")),
                targets=tuple(
                    TargetResult(
                        connection=target["connection"],
                        post=target["post"],
                        post_state=PostState(target["post_state"]),
                        permalink=target["permalink"],
                        error=_error_from_json(target.get("error")),
                        attempt=int(target.get("attempt", 0)),
                        request_key=str(target.get("request_key", "")),
                    )
                    for target in item.get("targets", ())
                ),
                current_child=item.get("current_child", ""),
                child_attempt=int(item.get("child_attempt", 0)),
                planned_run_time=_from_iso(item.get("planned_run_time")),
            )
        )
    return tuple(steps)


def trigger_to_json(trigger: RunTrigger) -> dict[str, Any]:
    return {
        "kind": trigger.kind.value,
        "trigger_time": _iso(trigger.trigger_time),
        "job": trigger.job,
        "nominal_time": _iso(trigger.nominal_time),
        "resumed_run": trigger.resumed_run,
    }


def trigger_from_json(data: Mapping[str, Any]) -> RunTrigger:
    trigger_time = _from_iso(data["trigger_time"])
    assert trigger_time is not None
    return RunTrigger(
        kind=TriggerKind(data["kind"]),
        trigger_time=trigger_time,
        job=data.get("job", ""),
        nominal_time=_from_iso(data.get("nominal_time")),
        resumed_run=data.get("resumed_run", ""),
    )


def error_to_json(error: StepError | None) -> dict[str, str] | None:
    return _error_json(error)


def error_from_json(data: Mapping[str, str] | None) -> StepError | None:
    return _error_from_json(data)
