"""In-test fakes of the peers the pipelines service calls (generation, connections, posting, scheduler).

They implement the v1 contracts on one grpc.aio server on 127.0.0.1:<free port>, in a thread with its own event
loop, so sync and async tests (and a pipelines subprocess) can use them. Each fake counts what it created and
honours `request_id` idempotency as the real services promise, so a test can assert "exactly one".
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
import jwt
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.generation.v1 import generation_service_pb2_grpc as gen_grpc
from contentpipe.api.oauth.v1 import connection_service_pb2 as conn_pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc as conn_grpc
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.oauth.v1 import posting_service_pb2_grpc as post_grpc
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched_pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc
from contentpipe.common import errors
from contentpipe.common.grpc_errors import abort_with_error
from contentpipe.common.ids import new_id
from contentpipe.oauth.domain.posts import Platform as PostingPlatform
from contentpipe.oauth.domain.posts_rules import validate_post
from contentpipe.oauth.entrypoints.grpc_posting import new_post_from

from tests.support import free_port


def caller(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The user a call acts for: x-contentpipe-user (service token) or the bearer token's subject."""
    metadata = {key: value for key, value in context.invocation_metadata() or ()}
    if metadata.get("x-contentpipe-user"):
        return str(metadata["x-contentpipe-user"])
    token = str(metadata.get("authorization", "")).removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def now_ts() -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


@dataclass
class Behaviour:
    """What the fakes do; tests change it between or during runs."""

    generation_failures: int = 0  # the first N generations end FAILED (retryable)
    generation_seconds: float = 0.0  # time a generation stays RUNNING
    generation_permanent_failure: bool = False
    publish_seconds: float = 0.0  # time a post stays QUEUED/PUBLISHING
    # per connection: "publish" (default), "reject", "reauth" (post FAILED NEEDS_REAUTH),
    # "reauth_sync" (CreatePost answers FAILED_PRECONDITION CONNECTION_NEEDS_REAUTH)
    connection_mode: dict[str, str] = field(default_factory=dict)


class _State:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.generations: dict[str, gen_pb.Generation] = {}
        self.generation_created: dict[str, float] = {}
        self.generation_by_request: dict[tuple[str, str], str] = {}
        self.generation_fail: set[str] = set()
        self.posts: dict[str, post_pb.Post] = {}
        self.validated_generations: list[gen_pb.Generation] = []  # validate_only requests, nothing created
        self.validated_posts: list[post_pb.Post] = []
        self.post_created: dict[str, float] = {}
        self.post_by_request: dict[tuple[str, str], str] = {}
        self.connections: dict[str, tuple[str, int, int]] = {}  # name -> owner, platform, status
        self.jobs: dict[str, sched_pb.Job] = {}
        self.calls: Counter[str] = Counter()
        self.canceled: list[str] = []


class FakeGeneration(gen_grpc.GenerationServiceServicer):
    def __init__(self, state: _State) -> None:
        self.s = state

    async def CreateGeneration(self, request: Any, context: Any) -> Any:
        self.s.calls["CreateGeneration"] += 1
        owner = caller(context)
        key = (owner, request.request_id)
        if request.validate_only:  # AIP-163: nothing is created, the request comes back as it would be
            self.s.validated_generations.append(request.generation)
            return gen_pb.CreateGenerationResponse(generation=request.generation)
        if request.request_id and key in self.s.generation_by_request:
            return gen_pb.CreateGenerationResponse(generation=self.s.generations[self.s.generation_by_request[key]])
        name = f"generations/{request.generation_id or new_id()}"
        if name in self.s.generations:  # a chosen id taken by another create (a repeated request returned above)
            await abort_with_error(context, errors.AlreadyExists(f"{name} already exists"), domain="generation")
        generation = gen_pb.Generation()
        generation.CopyFrom(request.generation)
        generation.name = name
        generation.owner = owner
        generation.state = gen_pb.GENERATION_STATE_QUEUED
        generation.request_id = request.request_id
        generation.create_time.CopyFrom(now_ts())
        self.s.generations[name] = generation
        self.s.generation_created[name] = time.monotonic()
        self.s.generation_by_request[key] = name
        created = sum(1 for g in self.s.generations.values() if g.owner == owner)
        if created <= self.s.behaviour.generation_failures:
            self.s.generation_fail.add(name)
        return gen_pb.CreateGenerationResponse(generation=generation)

    def _advance(self, generation: Any) -> None:
        if generation.state in (gen_pb.GENERATION_STATE_QUEUED, gen_pb.GENERATION_STATE_RUNNING):
            age = time.monotonic() - self.s.generation_created[generation.name]
            if age < self.s.behaviour.generation_seconds:
                generation.state = gen_pb.GENERATION_STATE_RUNNING
                return
            if generation.name in self.s.generation_fail or self.s.behaviour.generation_permanent_failure:
                generation.state = gen_pb.GENERATION_STATE_FAILED
                retryable = not self.s.behaviour.generation_permanent_failure
                generation.error.CopyFrom(
                    gen_pb.GenerationError(reason="PROVIDER_FAILED", message="the model crashed", retryable=retryable)
                )
                return
            generation.state = gen_pb.GENERATION_STATE_SUCCEEDED
            if generation.kind == gen_pb.GENERATION_KIND_TEXT:
                generation.text = f"text for: {generation.prompt}"
            else:
                video = generation.kind == gen_pb.GENERATION_KIND_VIDEO
                generation.outputs.add(
                    uri=f"file:///tmp/fake/{generation.name.split('/')[1]}.{'mp4' if video else 'png'}",
                    content_type="video/mp4" if video else "image/png",
                    size_bytes=1234,
                    width=720,
                    height=1280,
                    duration_seconds=4.0 if video else 0.0,
                )

    async def GetGeneration(self, request: Any, context: Any) -> Any:
        self.s.calls["GetGeneration"] += 1
        generation = self.s.generations.get(request.name)
        if generation is None or generation.owner != caller(context):
            await abort_with_error(context, errors.NotFound(f"{request.name} not found"), domain="generation")
        assert generation is not None
        self._advance(generation)
        return gen_pb.GetGenerationResponse(generation=generation)

    async def CancelGeneration(self, request: Any, context: Any) -> Any:
        self.s.calls["CancelGeneration"] += 1
        generation = self.s.generations.get(request.name)
        if generation is None:
            await abort_with_error(context, errors.NotFound(f"{request.name} not found"), domain="generation")
        assert generation is not None
        if generation.state in (gen_pb.GENERATION_STATE_QUEUED, gen_pb.GENERATION_STATE_RUNNING):
            generation.state = gen_pb.GENERATION_STATE_CANCELED
            self.s.canceled.append(request.name)
        return gen_pb.CancelGenerationResponse(generation=generation)


class FakeConnections(conn_grpc.ConnectionServiceServicer):
    def __init__(self, state: _State) -> None:
        self.s = state

    async def GetConnection(self, request: Any, context: Any) -> Any:
        self.s.calls["GetConnection"] += 1
        found = self.s.connections.get(request.name)
        if found is None or found[0] != caller(context):
            await abort_with_error(
                context, errors.NotFound(f"{request.name} not found", reason="CONNECTION_NOT_FOUND"), domain="oauth"
            )
        assert found is not None
        return conn_pb.GetConnectionResponse(
            connection=conn_pb.Connection(name=request.name, owner=found[0], platform=found[1], status=found[2])  # type: ignore[arg-type]
        )


class FakePosting(post_grpc.PostingServiceServicer):
    def __init__(self, state: _State) -> None:
        self.s = state

    async def CreatePost(self, request: Any, context: Any) -> Any:
        self.s.calls["CreatePost"] += 1
        owner = caller(context)
        key = (owner, request.request_id)
        if request.request_id and key in self.s.post_by_request:
            return post_pb.CreatePostResponse(post=self.s.posts[self.s.post_by_request[key]])
        connection = request.post.connection
        if connection not in self.s.connections or self.s.connections[connection][0] != owner:
            await abort_with_error(context, errors.NotFound(f"{connection} not found"), domain="oauth")
        if self.s.behaviour.connection_mode.get(connection) == "reauth_sync":
            await abort_with_error(
                context,
                errors.FailedPrecondition(f"{connection} must be authorized again", reason="CONNECTION_NEEDS_REAUTH"),
                domain="oauth",
            )
        if request.validate_only:
            self.s.validated_posts.append(request.post)
            platform = self.s.connections[connection][1]
            if platform != platform_pb2.PLATFORM_UNSPECIFIED:
                # The posting service's own rules (one home for them), with its error shape.
                name = platform_pb2.Platform.Name(platform).removeprefix("PLATFORM_").lower()  # type: ignore[arg-type]
                try:
                    validate_post(new_post_from(request), PostingPlatform(name))
                except errors.InvalidArgument as exc:
                    await abort_with_error(context, exc, domain="oauth")
            return post_pb.CreatePostResponse(post=request.post)
        name = f"posts/{request.post_id or new_id()}"
        if name in self.s.posts:  # a chosen id taken by another create (a repeated request returned above)
            await abort_with_error(context, errors.AlreadyExists(f"{name} already exists"), domain="oauth")
        post = post_pb.Post()
        post.CopyFrom(request.post)
        post.name = name
        post.owner = owner
        post.platform = self.s.connections[connection][1]  # type: ignore[assignment]
        post.state = post_pb.POST_STATE_QUEUED
        post.request_id = request.request_id
        self.s.posts[name] = post
        self.s.post_created[name] = time.monotonic()
        self.s.post_by_request[key] = name
        return post_pb.CreatePostResponse(post=post)

    def _advance(self, post: Any) -> None:
        if post.state != post_pb.POST_STATE_QUEUED:
            return
        if time.monotonic() - self.s.post_created[post.name] < self.s.behaviour.publish_seconds:
            return
        mode = self.s.behaviour.connection_mode.get(post.connection, "publish")
        if mode == "reject":
            post.state = post_pb.POST_STATE_FAILED
            post.last_error.CopyFrom(
                post_pb.PostError(
                    error_class=post_pb.POST_ERROR_CLASS_REJECTED_BY_PLATFORM,
                    reason="TEXT_TOO_LONG",
                    message="the platform refused the text",
                )
            )
        elif mode == "reauth":
            post.state = post_pb.POST_STATE_FAILED
            post.last_error.CopyFrom(
                post_pb.PostError(
                    error_class=post_pb.POST_ERROR_CLASS_NEEDS_REAUTH,
                    reason="CONNECTION_NEEDS_REAUTH",
                    message="invalid_grant",
                )
            )
        else:
            post.state = post_pb.POST_STATE_PUBLISHED
            post.permalink = f"https://example.test/{post.name}"

    async def GetPost(self, request: Any, context: Any) -> Any:
        self.s.calls["GetPost"] += 1
        post = self.s.posts.get(request.name)
        if post is None or post.owner != caller(context):
            await abort_with_error(context, errors.NotFound(f"{request.name} not found"), domain="oauth")
        assert post is not None
        self._advance(post)
        return post_pb.GetPostResponse(post=post)

    async def CancelPost(self, request: Any, context: Any) -> Any:
        self.s.calls["CancelPost"] += 1
        post = self.s.posts.get(request.name)
        if post is None:
            await abort_with_error(context, errors.NotFound(f"{request.name} not found"), domain="oauth")
        assert post is not None
        if post.state != post_pb.POST_STATE_QUEUED:
            await abort_with_error(context, errors.FailedPrecondition("not queued"), domain="oauth")
        post.state = post_pb.POST_STATE_CANCELED
        self.s.canceled.append(request.name)
        return post_pb.CancelPostResponse(post=post)


class FakeScheduler(sched_grpc.SchedulerServiceServicer):
    def __init__(self, state: _State) -> None:
        self.s = state

    async def UpdateJob(self, request: Any, context: Any) -> Any:
        from zoneinfo import ZoneInfo

        from croniter import croniter  # type: ignore[import-untyped]

        self.s.calls["UpdateJob"] += 1
        if not request.allow_missing and request.job.name not in self.s.jobs:
            await abort_with_error(context, errors.NotFound(f"{request.job.name} not found"), domain="scheduler")
        job = sched_pb.Job()
        job.CopyFrom(request.job)
        job.owner = caller(context)
        job.state = sched_pb.JOB_STATE_ACTIVE
        if job.HasField("cron"):
            zone = ZoneInfo(job.cron.time_zone or "UTC")
            fire = croniter(job.cron.expression, datetime.now(zone)).get_next(datetime)
            job.next_fire_time.FromDatetime(fire.astimezone(UTC))
        elif job.HasField("run_time"):
            job.next_fire_time.CopyFrom(job.run_time)
        self.s.jobs[job.name] = job
        return sched_pb.UpdateJobResponse(job=job)

    def _owned(self, name: str, context: Any) -> Any:
        job = self.s.jobs.get(name)
        return job if job is not None and job.owner == caller(context) else None

    async def ListJobs(self, request: Any, context: Any) -> Any:
        owner = caller(context)
        jobs = [j for j in self.s.jobs.values() if j.owner == owner and j.pipeline == request.pipeline]
        return sched_pb.ListJobsResponse(jobs=jobs)

    async def PauseJob(self, request: Any, context: Any) -> Any:
        job = self._owned(request.name, context)
        if job is None:
            await abort_with_error(context, errors.NotFound(f"{request.name} not found"), domain="scheduler")
        job.state = sched_pb.JOB_STATE_PAUSED
        job.state_reason = request.reason
        return sched_pb.PauseJobResponse(job=job)

    async def ResumeJob(self, request: Any, context: Any) -> Any:
        job = self._owned(request.name, context)
        if job is None:
            await abort_with_error(context, errors.NotFound(f"{request.name} not found"), domain="scheduler")
        job.state = sched_pb.JOB_STATE_ACTIVE
        job.state_reason = ""
        return sched_pb.ResumeJobResponse(job=job)


class FakePeers:
    """All four fakes on one loopback port; use `.address` for every CONTENTPIPE_<PEER>_ADDR."""

    def __init__(self) -> None:
        self.state = _State()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-peers", daemon=True)
        self._server: grpc.aio.Server | None = None

    @property
    def behaviour(self) -> Behaviour:
        return self.state.behaviour

    def env(self) -> dict[str, str]:
        return {
            "CONTENTPIPE_GENERATION_ADDR": self.address,
            "CONTENTPIPE_OAUTH_ADDR": self.address,
            "CONTENTPIPE_SCHEDULER_ADDR": self.address,
        }

    def add_connection(self, owner: str, platform: int = platform_pb2.PLATFORM_OUTBOX) -> str:
        name = f"connections/{new_id()}"
        self.state.connections[name] = (owner, platform, conn_pb.CONNECTION_STATUS_ACTIVE)
        return name

    async def _start(self) -> None:
        server = grpc.aio.server()
        gen_grpc.add_GenerationServiceServicer_to_server(FakeGeneration(self.state), server)  # type: ignore[abstract]
        conn_grpc.add_ConnectionServiceServicer_to_server(FakeConnections(self.state), server)  # type: ignore[abstract]
        post_grpc.add_PostingServiceServicer_to_server(FakePosting(self.state), server)  # type: ignore[abstract]
        sched_grpc.add_SchedulerServiceServicer_to_server(FakeScheduler(self.state), server)  # type: ignore[abstract]
        server.add_insecure_port(self.address)
        await server.start()
        self._server = server

    def start(self) -> FakePeers:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def run(self, coroutine: Any, timeout: float = 600) -> Any:
        """Run a coroutine on the fakes' event loop (grpc.aio clients must share the loop with the server)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FakePeers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------- counting

    def posts_for(self, connection: str) -> list[Any]:
        return [post for post in self.state.posts.values() if post.connection == connection]
