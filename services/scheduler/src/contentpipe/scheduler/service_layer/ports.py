"""What the service layer needs from the outside: the pipelines service and a webhook sender.

Plain-Python protocols and values; the adapters implement them with gRPC stubs and httpx.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Protocol

from contentpipe.common.error_class import ErrorClass
from contentpipe.common.errors import ContentpipeError


class PipelineRunStatus(IntEnum):
    """Values match the API enum PipelineRunState."""

    UNSPECIFIED = 0
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELED = 5


@dataclass(frozen=True, slots=True)
class PipelineRunInfo:
    """What the scheduler needs to know about a pipeline run."""

    name: str
    status: PipelineRunStatus
    error_class: ErrorClass | None = None  # of the run's error, when it failed with one
    error_reason: str = ""
    error_message: str = ""
    connection: str = ""  # the connection concerned, for NEEDS_REAUTH

    @property
    def terminal(self) -> bool:
        return self.status in (PipelineRunStatus.SUCCEEDED, PipelineRunStatus.FAILED, PipelineRunStatus.CANCELED)


@dataclass(frozen=True, slots=True)
class RunTrigger:
    """One run to queue: a pipeline of the caller's owner, with the trigger's idempotency key."""

    pipeline: str
    request_id: str
    job: str
    nominal_time: datetime | None


@dataclass(frozen=True, slots=True)
class PipelineInfo:
    name: str
    owner: str
    paused: bool


class Pipelines(Protocol):
    """The pipelines service, called on behalf of `owner` (NotFound for another user's pipeline)."""

    async def get_pipeline(self, owner: str, pipeline: str) -> PipelineInfo: ...

    async def run_pipeline(self, owner: str, trigger: RunTrigger) -> PipelineRunInfo: ...

    async def run_pipelines(
        self, owner: str, triggers: Sequence[RunTrigger]
    ) -> list[PipelineRunInfo | ContentpipeError]:
        """Queue several runs of `owner`'s pipelines in one call: one outcome per trigger, in order (an error is
        what run_pipeline would have raised for it). Raises for the call as a whole: Unavailable and the like,
        Unimplemented from a pipelines service without the batch call."""

    async def get_pipeline_run(self, owner: str, run: str) -> PipelineRunInfo: ...

    async def resume_pipeline_run(self, owner: str, run: str, *, request_id: str) -> PipelineRunInfo: ...

    async def check_reachable(self) -> None:
        """Raise Unavailable when the pipelines service cannot be reached."""


@dataclass(frozen=True, slots=True)
class WebhookResult:
    delivered: bool
    retry_after: float | None = None
    error: str = ""


class WebhookSender(Protocol):
    async def send(self, message_id: str, body: bytes) -> WebhookResult: ...
