"""In-memory fakes of the service layer's ports, for unit tests of the use cases and the engine."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.common import errors
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.workqueue import Lease
from contentpipe.oauth.domain.posts import Platform as PostingPlatform
from contentpipe.oauth.domain.posts_rules import validate_post
from contentpipe.oauth.entrypoints.grpc_posting import new_post_from
from contentpipe.pipelines.adapters.peers import post_message
from contentpipe.pipelines.domain.model import Pipeline, PipelineRun, PipelineState, Platform, PostState
from contentpipe.pipelines.service_layer.ports import (
    ConnectionInfo,
    GenerationRequest,
    GenerationStatus,
    JobSpec,
    JobStatus,
    LeaseLost,
    Page,
    Peers,
    PostRequest,
    PostStatus,
    RunFilter,
)


class MemoryPipelines:
    def __init__(self) -> None:
        self.items: dict[str, Pipeline] = {}
        self.by_request: dict[tuple[str, str], str] = {}

    async def add(self, pipeline: Pipeline, request_id: str) -> Pipeline:
        if request_id and (pipeline.owner, request_id) in self.by_request:
            return self.items[self.by_request[(pipeline.owner, request_id)]]
        self.items[pipeline.id] = pipeline
        if request_id:
            self.by_request[(pipeline.owner, request_id)] = pipeline.id
        return pipeline

    async def get(self, owner: str, pipeline_id: str) -> Pipeline | None:
        found = self.items.get(pipeline_id)
        return found if found is not None and found.owner == owner else None

    async def list_page(
        self, owner: str, state: PipelineState | None, limit: int, after: Mapping[str, Any] | None
    ) -> Page:
        items = [p for p in self.items.values() if p.owner == owner and (state is None or p.state == state)]
        return Page(items=items[:limit], next_cursor=None)

    async def replace(self, pipeline: Pipeline, expected_revision: int) -> bool:
        if self.items[pipeline.id].revision != expected_revision:
            return False
        self.items[pipeline.id] = pipeline
        return True

    async def delete(self, owner: str, pipeline_id: str, expected_revision: int | None) -> bool:
        return self.items.pop(pipeline_id, None) is not None


@dataclass
class _Row:
    run: PipelineRun
    lease_owner: str | None = None
    lease_expires: datetime | None = None
    cancel: bool = False


class MemoryRuns:
    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.saves = 0
        self.released: list[list[str] | None] = []  # the ids of each release call (None: all of an owner)

    async def add(self, run: PipelineRun, lease: Lease | None = None) -> PipelineRun:
        if run.request_id:
            existing = await self.find_by_request_id(run.owner, run.request_id)
            if existing is not None:
                return existing
        self.rows[run.id] = _Row(run)
        if lease is not None:
            self.rows[run.id].lease_owner = lease.owner
            self.rows[run.id].lease_expires = datetime.now(UTC) + timedelta(seconds=lease.seconds)
        return run

    async def get(self, owner: str, pipeline_id: str | None, run_id: str) -> PipelineRun | None:
        row = self.rows.get(run_id)
        if row is None or row.run.owner != owner:
            return None
        return replace(row.run, cancel_requested=row.cancel)

    async def find_by_request_id(self, owner: str, request_id: str) -> PipelineRun | None:
        for row in self.rows.values():
            if row.run.owner == owner and row.run.request_id == request_id:
                return row.run
        return None

    async def list_page(self, where: RunFilter, limit: int, after: Mapping[str, Any] | None) -> Page:
        runs = sorted(
            (r.run for r in self.rows.values() if r.run.owner == where.owner), key=lambda r: r.id, reverse=True
        )
        return Page(items=runs[:limit], next_cursor=None)

    def _held(self, row: _Row, owner: str) -> bool:
        return row.lease_owner == owner and row.lease_expires is not None and row.lease_expires > datetime.now(UTC)

    async def save(self, run: PipelineRun, lease_owner: str) -> None:
        row = self.rows.get(run.id)
        if row is None or not self._held(row, lease_owner):
            raise LeaseLost(run.id)
        row.run = run
        self.saves += 1
        if run.state.terminal:  # as the SQL repository: the write that ends a run gives its lease back
            row.lease_owner = None
            row.lease_expires = None

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
        now = datetime.now(UTC)
        claimed: list[PipelineRun] = []
        for row in sorted(self.rows.values(), key=lambda r: r.run.id):
            if len(claimed) >= limit:
                break
            if row.run.state.terminal or row.run.owner in exclude_owners or row.run.id in exclude_ids:
                continue
            if run_id is not None and row.run.id != run_id:
                continue
            if row.lease_expires is not None and row.lease_expires > now:
                continue
            row.lease_owner = lease_owner
            row.lease_expires = now + timedelta(seconds=lease_seconds)
            claimed.append(row.run)
        return claimed

    async def renew(self, run_ids: Sequence[str], lease_owner: str, lease_seconds: float) -> set[str]:
        held = set()
        for run_id in run_ids:
            row = self.rows[run_id]
            if self._held(row, lease_owner):
                row.lease_expires = datetime.now(UTC) + timedelta(seconds=lease_seconds)
                held.add(run_id)
        return held

    async def release(self, run_ids: Sequence[str] | None, lease_owner: str) -> None:
        self.released.append(None if run_ids is None else list(run_ids))
        for run_id in list(self.rows) if run_ids is None else run_ids:
            row = self.rows.get(run_id)
            if row is not None and row.lease_owner == lease_owner:
                row.lease_owner = None
                row.lease_expires = None

    async def request_cancel(self, owner: str, run_id: str) -> None:
        self.rows[run_id].cancel = True

    async def cancel_requested(self, run_id: str) -> bool:
        row = self.rows.get(run_id)
        return row is None or row.cancel

    async def cancel_requested_among(self, run_ids: Sequence[str]) -> set[str]:
        return {run_id for run_id in run_ids if await self.cancel_requested(run_id)}

    async def cancel_runs_of_pipeline(self, pipeline_id: str) -> list[PipelineRun]:
        return []


@dataclass(frozen=True)
class LostReply:
    """The peer creates the child (it then ends in `state`), but the caller gets `error` instead of the reply."""

    error: errors.ContentpipeError
    state: PostState = PostState.PUBLISHED


@dataclass
class FakePeerServices:
    """Scripted peers: each list of outcomes is consumed one per created child."""

    connections: dict[str, tuple[str, Platform]] = field(default_factory=dict)
    generation_outcomes: list[GenerationStatus | errors.ContentpipeError | LostReply] = field(default_factory=list)
    post_outcomes: dict[str, list[PostState | errors.ContentpipeError | tuple[PostState, ErrorClass] | LostReply]] = (
        field(default_factory=dict)
    )
    generations: dict[str, GenerationStatus] = field(default_factory=dict)
    generation_requests: dict[str, str] = field(default_factory=dict)
    posts: dict[str, PostStatus] = field(default_factory=dict)
    post_requests: dict[str, str] = field(default_factory=dict)
    created_posts: list[PostRequest] = field(default_factory=list)
    jobs: list[JobSpec] = field(default_factory=list)
    job_syncs: list[tuple[str, str]] = field(default_factory=list)  # ("pause" | "resume", pipeline)
    lookups: list[tuple[str, str | None]] = field(default_factory=list)
    validated: list[GenerationRequest | PostRequest] = field(default_factory=list)  # validate_only calls
    # A peer ("generations" or "posts") whose validate_only calls fail with this error (an outage).
    validate_outage: dict[str, errors.ContentpipeError] = field(default_factory=dict)
    ids: Any = field(default_factory=lambda: itertools.count(1))
    concurrent: int = 0
    max_concurrent: int = 0

    # connections
    async def get(self, name: str, *, acting_for: str | None) -> ConnectionInfo:
        self.lookups.append((name, acting_for))
        if name not in self.connections:
            raise errors.NotFound(f"{name} not found")
        return ConnectionInfo(name=name, platform=self.connections[name][1], status="ACTIVE")

    def peers(self) -> Peers:
        return Peers(connections=self, generations=_Generations(self), posts=_Posts(self), jobs=_Jobs(self))


class _Generations:
    def __init__(self, fake: FakePeerServices) -> None:
        self.fake = fake

    async def create(self, owner: str, request: GenerationRequest, request_id: str, name: str = "") -> GenerationStatus:
        if request_id in self.fake.generation_requests:
            return self.fake.generations[self.fake.generation_requests[request_id]]
        outcome = self.fake.generation_outcomes.pop(0) if self.fake.generation_outcomes else None
        if isinstance(outcome, errors.ContentpipeError):
            raise outcome
        lost = outcome.error if isinstance(outcome, LostReply) else None
        if isinstance(outcome, LostReply):
            outcome = None
        name = name or f"generations/g{next(self.fake.ids)}"
        final = (
            replace(outcome, name=name)
            if outcome is not None
            else GenerationStatus(
                name=name, state="SUCCEEDED", assets=({"uri": f"file:///{name}.mp4", "content_type": "video/mp4"},)
            )
        )
        self.fake.generations[name] = final
        self.fake.generation_requests[request_id] = name
        if lost is not None:
            raise lost
        return GenerationStatus(name=name, state="QUEUED")

    async def validate(self, request: GenerationRequest) -> Mapping[str, Any]:
        if "generations" in self.fake.validate_outage:
            raise self.fake.validate_outage["generations"]
        self.fake.validated.append(request)
        return dict(request.options)

    async def get(self, owner: str, name: str) -> GenerationStatus:
        if name not in self.fake.generations:  # as the generation service answers
            raise errors.NotFound(f"{name} not found")
        return self.fake.generations[name]

    async def wait(self, owner: str, name: str, max_wait: float) -> GenerationStatus:
        return self.fake.generations[name]  # a fake generation is terminal from the start

    async def cancel(self, owner: str, name: str) -> None:
        if name not in self.fake.generations:  # as the generation service answers
            raise errors.NotFound(f"{name} not found")
        self.fake.generations[name] = replace(self.fake.generations[name], state="CANCELED")


class _Posts:
    def __init__(self, fake: FakePeerServices) -> None:
        self.fake = fake

    async def create(self, owner: str, request: PostRequest, request_id: str, name: str = "") -> PostStatus:
        if request_id in self.fake.post_requests:
            return self.fake.posts[self.fake.post_requests[request_id]]
        script = self.fake.post_outcomes.get(request.connection, [])
        outcome = script.pop(0) if script else PostState.PUBLISHED
        if isinstance(outcome, errors.ContentpipeError):
            raise outcome
        lost = outcome.error if isinstance(outcome, LostReply) else None
        if isinstance(outcome, LostReply):
            outcome = outcome.state
        error_class: ErrorClass | None = None
        if isinstance(outcome, tuple):
            outcome, error_class = outcome
        name = name or f"posts/p{next(self.fake.ids)}"
        self.fake.created_posts.append(request)
        self.fake.posts[name] = PostStatus(
            name=name, state=outcome, error_class=error_class, error_reason="X" if error_class is not None else ""
        )
        self.fake.post_requests[request_id] = name
        if lost is not None:
            raise lost
        return PostStatus(name=name, state=PostState.QUEUED)

    async def validate(self, request: PostRequest) -> None:
        if "posts" in self.fake.validate_outage:
            raise self.fake.validate_outage["posts"]
        if request.connection not in self.fake.connections:
            raise errors.NotFound(f"{request.connection} not found")
        self.fake.validated.append(request)
        # The posting service's own rules, on the message the real adapter would send (one home for them).
        platform = self.fake.connections[request.connection][1]
        if platform is not Platform.UNSPECIFIED:
            message = post_pb.CreatePostRequest(post=post_message(request), validate_only=True)
            validate_post(new_post_from(message), PostingPlatform(platform.value.lower()))

    async def get(self, owner: str, name: str) -> PostStatus:
        if name not in self.fake.posts:  # as the posting service answers
            raise errors.NotFound(f"{name} not found")
        return self.fake.posts[name]

    async def wait(self, owner: str, name: str, max_wait: float) -> PostStatus:
        return self.fake.posts[name]  # a fake post is in its final state from the start

    async def cancel(self, owner: str, name: str) -> None:
        return None


class _Jobs:
    def __init__(self, fake: FakePeerServices) -> None:
        self.fake = fake

    async def upsert(self, owner: str, spec: JobSpec) -> JobStatus:
        self.fake.jobs.append(spec)
        return JobStatus(name=f"jobs/{spec.job_id}", next_fire_time=spec.run_time)

    async def pause_for_pipeline(self, pipeline: str) -> list[str]:
        self.fake.job_syncs.append(("pause", pipeline))
        return [f"jobs/{spec.job_id}" for spec in self.fake.jobs if spec.pipeline == pipeline]

    async def resume_for_pipeline(self, pipeline: str) -> list[str]:
        self.fake.job_syncs.append(("resume", pipeline))
        return [f"jobs/{spec.job_id}" for spec in self.fake.jobs if spec.pipeline == pipeline]
