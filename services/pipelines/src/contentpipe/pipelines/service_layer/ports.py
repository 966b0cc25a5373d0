"""What the use cases need from storage and from the peer services (implemented in adapters, faked in tests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from contentpipe.common.error_class import ErrorClass
from contentpipe.common.workqueue import Lease
from contentpipe.pipelines.domain.model import (
    GenerationKind,
    Pipeline,
    PipelineRun,
    PipelineState,
    Platform,
    PostState,
    RunState,
)


class LeaseLost(Exception):
    """The run's lease went to another worker; this worker must stop touching the run."""


@dataclass(frozen=True, slots=True)
class Page:
    items: Sequence[Any]
    next_cursor: Mapping[str, Any] | None


class PipelineRepository(Protocol):
    async def add(self, pipeline: Pipeline, request_id: str) -> Pipeline:
        """Insert; with a request id already used by this owner, return that pipeline instead."""

    async def get(self, owner: str, pipeline_id: str) -> Pipeline | None: ...

    async def list_page(
        self, owner: str, state: PipelineState | None, limit: int, after: Mapping[str, Any] | None
    ) -> Page: ...

    async def replace(self, pipeline: Pipeline, expected_revision: int) -> bool:
        """Store `pipeline` if the stored revision is still `expected_revision`."""

    async def delete(self, owner: str, pipeline_id: str, expected_revision: int | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class RunFilter:
    owner: str
    pipeline_id: str | None = None
    state: RunState | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class RunDispatch(Protocol):
    """The run queue of this replica, for runs it creates itself: one that it can execute at once is inserted already
    leased to it and starts without waiting for a claim."""

    def reserve(self, run: PipelineRun) -> Lease | None:
        """The lease to insert `run` with when this replica can execute it now (then `start` or `unreserve`
        follows), else None."""

    def start(self, run: PipelineRun) -> None:
        """Execute `run`, inserted under the lease `reserve` gave."""

    def unreserve(self, run: PipelineRun) -> None:
        """`run` was not inserted (its request id found an earlier run, or the insert failed)."""


class RunRepository(Protocol):
    async def add(self, run: PipelineRun, lease: Lease | None = None) -> PipelineRun:
        """Insert (already leased when `lease` is given); if the owner already used the run's request id, return
        that run instead."""

    async def get(self, owner: str, pipeline_id: str | None, run_id: str) -> PipelineRun | None: ...

    async def find_by_request_id(self, owner: str, request_id: str) -> PipelineRun | None: ...

    async def list_page(self, where: RunFilter, limit: int, after: Mapping[str, Any] | None) -> Page: ...

    async def save(self, run: PipelineRun, lease_owner: str) -> None:
        """Store the run's progress; raises LeaseLost when `lease_owner` no longer holds it."""

    async def claim(
        self,
        lease_owner: str,
        limit: int,
        lease_seconds: float,
        *,
        exclude_owners: Sequence[str] = (),
        run_id: str | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[PipelineRun]:
        """Lease QUEUED or orphaned RUNNING runs (oldest first)."""

    async def renew(self, run_ids: Sequence[str], lease_owner: str, lease_seconds: float) -> set[str]:
        """Extend the leases still held (an expired one is not revived); returns those ids."""

    async def release(self, run_ids: Sequence[str] | None, lease_owner: str) -> None:
        """Give back `lease_owner`'s leases on `run_ids` (None: all it holds, e.g. from before a restart)."""

    async def request_cancel(self, owner: str, run_id: str) -> None: ...

    async def cancel_requested(self, run_id: str) -> bool: ...

    async def cancel_requested_among(self, run_ids: Sequence[str]) -> set[str]:
        """The ids (of those given) whose cancellation was requested or that no longer exist."""

    async def cancel_runs_of_pipeline(self, pipeline_id: str) -> list[PipelineRun]:
        """Flag every non-terminal run of the pipeline for cancellation; returns them."""


# ---------------------------------------------------------------- peers


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    name: str
    platform: Platform
    status: str


class Connections(Protocol):
    async def get(self, name: str, *, acting_for: str | None) -> ConnectionInfo:
        """NotFound when it does not exist or belongs to someone else."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    kind: GenerationKind
    prompt: str
    options: Mapping[str, Any]
    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class GenerationStatus:
    name: str
    state: str  # QUEUED RUNNING SUCCEEDED FAILED CANCELED
    assets: tuple[Mapping[str, Any], ...] = ()
    text: str = ""
    error_reason: str = ""
    error_message: str = ""
    error_retryable: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELED")


class Generations(Protocol):
    async def create(self, owner: str, request: GenerationRequest, request_id: str, name: str = "") -> GenerationStatus:
        """Create (or, for a repeated `request_id`, find) the generation; `name` is the one to give it (empty: the
        peer chooses)."""

    async def validate(self, request: GenerationRequest) -> Mapping[str, Any]:
        """CreateGeneration with validate_only, as the caller: the options it would run with (the model's
        defaults filled in); raises InvalidArgument with `generation.*` field violations when it would refuse."""

    async def get(self, owner: str, name: str) -> GenerationStatus: ...

    async def wait(self, owner: str, name: str, max_wait: float) -> GenerationStatus:
        """The generation once terminal, or as it is after about `max_wait` seconds (a long poll; a peer
        without one answers at once, like `get`)."""
        ...

    async def cancel(self, owner: str, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class MediaItem:
    uri: str
    kind: str  # IMAGE | VIDEO
    content_type: str = ""
    size_bytes: int = 0
    duration_seconds: float = 0.0
    width: int = 0
    height: int = 0
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class PostRequest:
    connection: str
    text: str
    media: tuple[MediaItem, ...]
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PostStatus:
    name: str
    state: PostState
    permalink: str = ""
    error_class: ErrorClass | None = None  # of the post's last error
    error_reason: str = ""
    error_message: str = ""
    next_attempt_time: datetime | None = None


class Posts(Protocol):
    async def create(self, owner: str, request: PostRequest, request_id: str, name: str = "") -> PostStatus:
        """Create (or, for a repeated `request_id`, find) the post; `name` is the one to give it (empty: the peer
        chooses)."""

    async def validate(self, request: PostRequest) -> None:
        """CreatePost with validate_only, as the caller; raises InvalidArgument with `post.*` field violations
        (NotFound / FailedPrecondition for a missing or unusable connection)."""

    async def get(self, owner: str, name: str) -> PostStatus: ...

    async def wait(self, owner: str, name: str, max_wait: float) -> PostStatus:
        """The post once terminal (UNCONFIRMED included), or as it is after about `max_wait` seconds (a long
        poll; a peer without one answers at once, like `get`)."""
        ...

    async def cancel(self, owner: str, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class JobSpec:
    job_id: str
    pipeline: str
    display_name: str
    cron_expression: str | None = None
    time_zone: str = ""
    run_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobStatus:
    name: str
    next_fire_time: datetime | None


# The state_reason a job gets when its pipeline is paused: resuming the pipeline resumes exactly those jobs,
# not ones their owner paused for reasons of their own.
PIPELINE_PAUSED_REASON = "its pipeline is paused"


class Jobs(Protocol):
    async def upsert(self, owner: str, spec: JobSpec) -> JobStatus: ...

    async def pause_for_pipeline(self, pipeline: str) -> list[str]:
        """As the caller: pause every ACTIVE job of `pipeline` with PIPELINE_PAUSED_REASON; returns their names."""

    async def resume_for_pipeline(self, pipeline: str) -> list[str]:
        """As the caller: resume the jobs of `pipeline` paused with PIPELINE_PAUSED_REASON; returns their names."""


@dataclass(frozen=True, slots=True)
class Peers:
    connections: Connections
    generations: Generations
    posts: Posts
    jobs: Jobs
