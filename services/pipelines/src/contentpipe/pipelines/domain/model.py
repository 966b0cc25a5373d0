"""Pipelines, their steps, and runs with per-step history: plain Python, no transport or storage types."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from contentpipe.common.error_class import ErrorClass
from contentpipe.common.etags import etag_for

PIPELINE_PATTERN = "pipelines/{id}"
RUN_PATTERN = "pipelines/{id}/runs/{id}"
CONNECTION_PATTERN = "connections/{id}"


class PipelineState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"


class RunState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED)


class StepState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    REUSED = "REUSED"

    @property
    def done(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.REUSED)


class TriggerKind(enum.StrEnum):
    MANUAL = "MANUAL"
    SCHEDULE = "SCHEDULE"
    RESUME = "RESUME"


class GenerationKind(enum.StrEnum):
    VIDEO = "VIDEO"
    IMAGE = "IMAGE"
    TEXT = "TEXT"


class PostState(enum.StrEnum):
    """The posting service's post states, as last seen by a run."""

    UNSPECIFIED = "UNSPECIFIED"
    QUEUED = "QUEUED"
    PUBLISHING = "PUBLISHING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNCONFIRMED = "UNCONFIRMED"

    @property
    def terminal(self) -> bool:
        return self in (PostState.PUBLISHED, PostState.FAILED, PostState.CANCELED, PostState.UNCONFIRMED)


class Platform(enum.StrEnum):
    INSTAGRAM = "INSTAGRAM"
    TWITTER = "TWITTER"
    LINKEDIN = "LINKEDIN"
    TIKTOK = "TIKTOK"
    GOOGLE = "GOOGLE"
    FACEBOOK = "FACEBOOK"
    OUTBOX = "OUTBOX"
    UNSPECIFIED = "UNSPECIFIED"


# ---------------------------------------------------------------- definitions


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """As the user wrote it: zero/None fields mean the documented default (see `effective`)."""

    max_attempts: int = 0
    initial_backoff: float | None = None
    multiplier: float = 0.0
    max_backoff: float | None = None

    def effective(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts or 3,
            initial_backoff=5.0 if self.initial_backoff is None else self.initial_backoff,
            multiplier=self.multiplier or 2.0,
            max_backoff=300.0 if self.max_backoff is None else self.max_backoff,
        )


@dataclass(frozen=True, slots=True)
class GenerateContent:
    kind: GenerationKind | None
    prompt: str
    # Generation options as a JSON-compatible mapping (passed through to the generation service).
    options: Mapping[str, Any] = field(default_factory=dict)
    provider: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class PostToPlatform:
    connections: tuple[str, ...]
    caption: str = ""
    media_step_id: str = ""
    media_indexes: tuple[int, ...] = ()
    # Per-platform options as a JSON-compatible mapping; string values in it are templates.
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SchedulePipeline:
    """Exactly one of the three is set (validation enforces it)."""

    cron_expression: str | None = None
    time_zone: str = ""
    run_time: datetime | None = None
    delay_seconds: float | None = None


Action = GenerateContent | PostToPlatform | SchedulePipeline


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    action: Action | None
    retry_policy: RetryPolicy | None = None

    @property
    def kind(self) -> str:
        if isinstance(self.action, GenerateContent):
            return "generate_content"
        if isinstance(self.action, PostToPlatform):
            return "post_to_platform"
        if isinstance(self.action, SchedulePipeline):
            return "schedule_pipeline"
        return ""

    def policy(self) -> RetryPolicy:
        return (self.retry_policy or RetryPolicy()).effective()


@dataclass(frozen=True, slots=True)
class Pipeline:
    id: str
    owner: str
    display_name: str
    description: str
    state: PipelineState
    steps: tuple[Step, ...]
    revision: int
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        # Empty for a pipeline that was only validated (validate_only): it exists nowhere.
        return f"pipelines/{self.id}" if self.id else ""

    @property
    def etag(self) -> str:
        # Changes whenever anything changes: every update bumps the revision.
        return etag_for(self.revision)


# ---------------------------------------------------------------- runs


@dataclass(frozen=True, slots=True)
class StepError:
    error_class: ErrorClass
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class StepOutputs:
    generation: str = ""
    # Assets as JSON-compatible mappings (uri, content_type, size_bytes, ...), as the generation service gave them.
    assets: tuple[Mapping[str, Any], ...] = ()
    text: str = ""
    posts: tuple[str, ...] = ()
    job: str = ""
    next_run_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class TargetResult:
    connection: str
    post: str = ""
    post_state: PostState = PostState.UNSPECIFIED
    permalink: str = ""
    error: StepError | None = None
    # The step attempt whose request id created (or will create) `post`. Kept across step attempts until that post
    # ends FAILED/CANCELED with a retryable class: only then does a later attempt create a new post with a new key.
    attempt: int = 0
    # The request id of a create made by an earlier run, carried over by a resume: a create whose answer was lost
    # (or whose post was still on its way) is found again under its own key, never made a second time.
    request_key: str = ""

    @property
    def published(self) -> bool:
        return self.post_state == PostState.PUBLISHED


@dataclass(frozen=True, slots=True)
class StepRun:
    step_id: str
    state: StepState = StepState.PENDING
    attempts: int = 0
    start_time: datetime | None = None
    finish_time: datetime | None = None
    next_attempt_time: datetime | None = None
    children: tuple[str, ...] = ()
    outputs: StepOutputs | None = None
    error: StepError | None = None
    targets: tuple[TargetResult, ...] = ()
    # The child being awaited (generation name), saved as soon as it is known; kept across retries until that
    # child itself fails, so a retry after a lost reply or a crash adopts it instead of creating another.
    current_child: str = ""
    # The step attempt whose request id names the generation being created (0: none yet). A retry after an error
    # that is not the generation's own failure reuses it, so the peer's idempotency returns the same generation.
    child_attempt: int = 0
    # schedule_pipeline with a delay: the instant computed on the first attempt (kept so a retry is idempotent).
    planned_run_time: datetime | None = None

    def with_child(self, child: str) -> StepRun:
        children = self.children if child in self.children else (*self.children, child)
        return replace(self, children=children, current_child=child)


@dataclass(frozen=True, slots=True)
class RunTrigger:
    kind: TriggerKind
    trigger_time: datetime
    job: str = ""
    nominal_time: datetime | None = None
    resumed_run: str = ""


@dataclass(frozen=True, slots=True)
class PipelineRun:
    id: str
    pipeline_id: str
    owner: str
    pipeline_revision: int
    pipeline_display_name: str
    state: RunState
    trigger: RunTrigger
    # The revision's steps, pinned when the run was created.
    definition: tuple[Step, ...]
    steps: tuple[StepRun, ...]
    create_time: datetime
    request_id: str = ""
    error: StepError | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    # W3C trace context of the call that queued it; the worker's spans link to it.
    trace_context: Mapping[str, str] = field(default_factory=dict)
    cancel_requested: bool = False

    @property
    def name(self) -> str:
        return f"pipelines/{self.pipeline_id}/runs/{self.id}"

    def step_index(self, step_id: str) -> int:
        for index, step in enumerate(self.steps):
            if step.step_id == step_id:
                return index
        raise KeyError(step_id)

    def with_step(self, index: int, step_run: StepRun) -> PipelineRun:
        steps = list(self.steps)
        steps[index] = step_run
        return replace(self, steps=tuple(steps))
