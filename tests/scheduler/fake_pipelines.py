"""An in-test PipelineService on 127.0.0.1:<free port>, in its own thread and event loop.

Follows the contract in pipeline_service.proto: ownership (another user's pipeline is NOT_FOUND), PAUSED
pipelines answer FAILED_PRECONDITION, `request_id` makes RunPipeline/ResumePipelineRun idempotent. It counts
every call so tests can assert "triggered exactly once per (job, nominal time)". BatchRunPipelines answers each
request as RunPipeline would (or UNIMPLEMENTED while `batch_supported` is off, as a pipelines service of an
earlier version does).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import jwt
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.support import TEST_JWT_SECRET, free_port

# What a run reports when polled: a state, and for FAILED an error class (and a connection for NEEDS_REAUTH).
Outcome = tuple[int, int, str]
SUCCEED: Outcome = (pb.PIPELINE_RUN_STATE_SUCCEEDED, 0, "")
RUNNING: Outcome = (pb.PIPELINE_RUN_STATE_RUNNING, 0, "")


def fail(error_class: int = pb.STEP_ERROR_CLASS_RETRYABLE, connection: str = "") -> Outcome:
    return (pb.PIPELINE_RUN_STATE_FAILED, error_class, connection)


@dataclass
class FakeState:
    pipelines: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (owner, state)
    runs: dict[str, pb.PipelineRun] = field(default_factory=dict)
    by_request: dict[str, str] = field(default_factory=dict)
    run_calls: Counter[str] = field(default_factory=Counter)  # request_id -> RunPipeline calls
    fire_calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (job, nominal iso) -> calls
    resume_calls: Counter[str] = field(default_factory=Counter)
    outcome: Callable[[pb.PipelineRun], Outcome] = lambda run: RUNNING
    unavailable: bool = False
    run_delay: float = 0.0  # seconds RunPipeline takes (a slow pipelines service)
    acting_users: list[str] = field(default_factory=list)
    call_request_ids: list[str] = field(default_factory=list)  # the x-request-id of each RunPipeline call
    batch_supported: bool = True
    batch_sizes: list[int] = field(default_factory=list)  # requests per BatchRunPipelines call answered


def _caller(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    header = metadata.get("authorization", "")
    claims = jwt.decode(header.removeprefix("Bearer "), TEST_JWT_SECRET, algorithms=["HS256"])
    if metadata.get("x-contentpipe-user"):
        assert claims.get("role") == "service"
        return metadata["x-contentpipe-user"]
    return str(claims["sub"])


class _Servicer(pb_grpc.PipelineServiceServicer):
    def __init__(self, state: FakeState, lock: threading.Lock) -> None:
        self.state = state
        self.lock = lock

    async def _acting_user(self, context: Any) -> str:
        if self.state.unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
        user = _caller(context)
        self.state.acting_users.append(user)
        return user

    async def _owned(self, context: Any, name: str) -> tuple[str, int]:
        user = await self._acting_user(context)
        entry = self.state.pipelines.get(name)
        if entry is None or entry[0] != user:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"pipeline {name} not found")
        assert entry is not None
        return entry

    def _run_refusal(self, user: str, name: str) -> tuple[grpc.StatusCode, str, str] | None:
        """Why `user` may not run pipeline `name` (status, message, reason), or None."""
        entry = self.state.pipelines.get(name)
        if entry is None or entry[0] != user:
            return grpc.StatusCode.NOT_FOUND, f"pipeline {name} not found", "PIPELINE_NOT_FOUND"
        if entry[1] == pb.PIPELINE_STATE_PAUSED:
            return grpc.StatusCode.FAILED_PRECONDITION, "pipeline is paused", "PIPELINE_PAUSED"
        return None

    async def GetPipeline(self, request: pb.GetPipelineRequest, context: Any) -> pb.GetPipelineResponse:
        owner, state = await self._owned(context, request.name)
        return pb.GetPipelineResponse(pipeline=pb.Pipeline(name=request.name, owner=owner, state=state))  # type: ignore[arg-type]

    async def RunPipeline(self, request: pb.RunPipelineRequest, context: Any) -> pb.RunPipelineResponse:
        user = await self._acting_user(context)
        if refusal := self._run_refusal(user, request.name):
            code, message, _ = refusal
            await context.abort(code, message)
        if self.state.run_delay:
            await asyncio.sleep(self.state.run_delay)
        with self.lock:
            metadata = dict(context.invocation_metadata() or ())
            self.state.call_request_ids.append(str(metadata.get("x-request-id", "")))
            return pb.RunPipelineResponse(run=self._queue(user, request))

    async def BatchRunPipelines(
        self, request: pb.BatchRunPipelinesRequest, context: Any
    ) -> pb.BatchRunPipelinesResponse:
        if not self.state.batch_supported:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if not 1 <= len(request.requests) <= 500:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "requests: 1 to 500")
        user = await self._acting_user(context)
        if self.state.run_delay:
            await asyncio.sleep(self.state.run_delay)
        results = []
        with self.lock:
            self.state.batch_sizes.append(len(request.requests))
            for item in request.requests:
                if refusal := self._run_refusal(user, item.name):
                    code, message, reason = refusal
                    error = pb.RunPipelineError(code=code.value[0], message=message, reason=reason)
                    results.append(pb.RunPipelineResult(error=error))
                else:
                    results.append(pb.RunPipelineResult(run=self._queue(user, item)))
        return pb.BatchRunPipelinesResponse(results=results)

    def _queue(self, owner: str, request: pb.RunPipelineRequest) -> pb.PipelineRun:
        """The run of `request` (the existing one for a repeated request id); call with the lock held."""
        self.state.run_calls[request.request_id] += 1
        nominal = request.nominal_time.ToDatetime().isoformat() if request.HasField("nominal_time") else ""
        self.state.fire_calls[(request.job, nominal)] += 1
        run = self._run_for(request.request_id, request.name, owner)
        run.trigger.job = request.job
        return run

    def _run_for(self, request_id: str, pipeline: str, owner: str) -> pb.PipelineRun:
        """The run a request id created, or a new QUEUED run of `pipeline` for it; call with the lock held."""
        existing = self.state.by_request.get(request_id)
        if existing is not None:
            return self.state.runs[existing]
        name = f"{pipeline}/runs/r{len(self.state.runs) + 1}"
        run = pb.PipelineRun(name=name, owner=owner, state=pb.PIPELINE_RUN_STATE_QUEUED, request_id=request_id)
        self.state.runs[name] = run
        self.state.by_request[request_id] = name
        return run

    async def GetPipelineRun(self, request: pb.GetPipelineRunRequest, context: Any) -> pb.GetPipelineRunResponse:
        if self.state.unavailable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down for the test")
        user = _caller(context)
        run = self.state.runs.get(request.name)
        if run is None or run.owner != user:
            await context.abort(grpc.StatusCode.NOT_FOUND, "run not found")
        assert run is not None
        state, error_class, connection = self.state.outcome(run)
        out = pb.PipelineRun()
        out.CopyFrom(run)
        out.state = state  # type: ignore[assignment]
        if state == pb.PIPELINE_RUN_STATE_FAILED:
            out.error.error_class = error_class  # type: ignore[assignment]
            out.error.reason = "STEP_FAILED"
            out.error.message = "step post failed"
            if connection:
                out.steps.add(step_id="post").targets.add(
                    connection=connection,
                    error=pb.StepError(error_class=error_class),  # type: ignore[arg-type]
                )
        return pb.GetPipelineRunResponse(run=out)

    async def ResumePipelineRun(
        self, request: pb.ResumePipelineRunRequest, context: Any
    ) -> pb.ResumePipelineRunResponse:
        user = _caller(context)
        with self.lock:
            self.state.resume_calls[request.request_id] += 1
            previous = self.state.runs.get(request.name)
            if previous is None or previous.owner != user:
                await context.abort(grpc.StatusCode.NOT_FOUND, "run not found")
            assert previous is not None
            run = self._run_for(request.request_id, request.name.split("/runs/")[0], user)
            run.trigger.resumed_run = request.name
            return pb.ResumePipelineRunResponse(run=run)


class FakePipelines:
    """`with FakePipelines() as fake:` → `fake.address`, `fake.state` (mutate under `fake.lock`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.state = FakeState()
        self.lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-pipelines", daemon=True)
        self._server: grpc.aio.Server | None = None

    def add_pipeline(self, name: str, owner: str, paused: bool = False) -> None:
        state = pb.PIPELINE_STATE_PAUSED if paused else pb.PIPELINE_STATE_ACTIVE
        with self.lock:
            self.state.pipelines[name] = (owner, state)

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        servicer = _Servicer(self.state, self.lock)  # type: ignore[abstract]  # the RPCs the scheduler uses
        pb_grpc.add_PipelineServiceServicer_to_server(servicer, self._server)
        health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self._server)
        self._server.add_insecure_port(self.address)
        await self._server.start()

    def __enter__(self) -> FakePipelines:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
