"""Composition root of the pipelines service: engine, peers, servicers, server, run engine.

The shape every service's bootstrap has: `build(config) -> Components` creates everything once,
`registrations(components)` and `background_tasks(components)` say what the server runs, `serve(config)` hands
them to `contentpipe.common.server.serve_service`, `migrate(config)` applies the schema; `process_pending(config)`
is the batch entry point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc.aio
from contentpipe.api.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc
from contentpipe.common.changes import ChangeNotifier
from contentpipe.common.channels import ServiceToken, create_channel
from contentpipe.common.database import Schema, create_service_engine
from contentpipe.common.notify import ChangeChannel, PgWakeChannel, change_channel, close_channels, wake_channel
from contentpipe.common.pagination import PageTokenCodec
from contentpipe.common.server import BackgroundTask, ServiceRegistration, serve_service
from contentpipe.common.telemetry import setup_telemetry
from contentpipe.common.workqueue import QueueSettings
from contentpipe.pipelines.adapters.peers import GrpcConnections, GrpcGenerations, GrpcJobs, GrpcPosts
from contentpipe.pipelines.adapters.repository import SqlPipelineRepository, SqlRunRepository
from contentpipe.pipelines.config import SERVICE, PipelinesConfig
from contentpipe.pipelines.entrypoints.grpc_pipelines import PipelineServiceServicer
from contentpipe.pipelines.service_layer.engine.core import EngineSettings
from contentpipe.pipelines.service_layer.engine.worker import Worker
from contentpipe.pipelines.service_layer.metrics import default_metrics, sample_queue_forever
from contentpipe.pipelines.service_layer.pipelines import PipelineService
from contentpipe.pipelines.service_layer.ports import Peers
from contentpipe.pipelines.service_layer.run_watch import NotifyingRunRepository
from contentpipe.pipelines.service_layer.runs import RunService
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA = Schema.of(SERVICE, Path(__file__).parent / "migrations")
MIGRATIONS = SCHEMA.script_location
VERSION_TABLE = SCHEMA.version_table
_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Components:
    """Everything built once per process; `close()` releases channels and the database pool."""

    config: PipelinesConfig
    engine: AsyncEngine
    channels: dict[str, grpc.aio.Channel]
    worker: Worker
    pipelines: PipelineService
    runs: RunService
    page_tokens: PageTokenCodec
    run_repo: SqlRunRepository  # the queue gauges sample it
    # A run queued on another replica wakes this worker (PostgreSQL LISTEN/NOTIFY; SQLite: in-process only).
    notify: PgWakeChannel | None = None
    # A run saved by another replica (the one running it) wakes WaitPipelineRun here (PostgreSQL; SQLite: one process).
    changes: ChangeChannel | None = None

    async def close(self) -> None:
        await close_channels(self.notify, self.changes)
        for channel in self.channels.values():
            await channel.close(None)
        await self.engine.dispose()


def engine_settings(config: PipelinesConfig) -> EngineSettings:
    return EngineSettings(
        queue=QueueSettings(
            owner=config.worker_id,
            lease_seconds=config.lease_seconds,
            poll_interval=config.claim_interval_seconds,
            concurrency=config.max_in_flight,
            claim_batch=config.max_in_flight,
        ),
        max_per_user=config.max_runs_per_user,
        poll_initial=config.poll_initial_seconds,
        poll_max=config.poll_max_seconds,
    )


def build(config: PipelinesConfig) -> Components:
    engine = create_service_engine(config.common, concurrency=config.max_in_flight)
    # One channel per peer for the whole process; adapters build stubs on them.
    channels = {
        peer: create_channel(config.common.peers[peer], tls=config.common.tls)
        for peer in ("generation", "oauth", "scheduler")
    }
    assert config.common.jwt_secret is not None  # load_config requires it
    token = ServiceToken(config.common.jwt_secret, SERVICE)
    peers = Peers(
        connections=GrpcConnections(channels["oauth"], token),
        generations=GrpcGenerations(channels["generation"], token),
        posts=GrpcPosts(channels["oauth"], token),
        jobs=GrpcJobs(channels["scheduler"], token),
    )
    pipeline_repo = SqlPipelineRepository(engine)
    changes = ChangeNotifier(recheck_seconds=config.common.long_poll_recheck_seconds)
    stored_runs = SqlRunRepository(engine)
    run_repo = NotifyingRunRepository(stored_runs, changes)
    settings = engine_settings(config)
    worker = Worker(run_repo, peers, settings)
    return Components(
        config=config,
        engine=engine,
        channels=channels,
        worker=worker,
        pipelines=PipelineService(pipeline_repo, run_repo, peers),
        runs=RunService(
            pipeline_repo, run_repo, peers, settings, on_queued=worker.wake, dispatch=worker, changes=changes
        ),
        page_tokens=PageTokenCodec(config.common.jwt_secret, purpose="pipelines-page-token"),
        run_repo=stored_runs,
        notify=wake_channel(engine, "contentpipe_pipelines", worker.queue.wake),
        changes=change_channel(engine, "contentpipe_pipelines_changes", changes),
    )


def registrations(components: Components) -> list[ServiceRegistration]:
    """The gRPC services this process serves, with their servicers wired to their dependencies."""
    return [
        ServiceRegistration(
            full_name=pipeline_service_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name,
            add_to_server=pipeline_service_pb2_grpc.add_PipelineServiceServicer_to_server,
            servicer=PipelineServiceServicer(components.pipelines, components.runs, components.page_tokens),
        ),
    ]


def background_tasks(components: Components) -> list[BackgroundTask]:
    """Loops started once the service is SERVING and cancelled at shutdown: the long polls' change listener (every
    replica serves WaitPipelineRun) and, with the worker on, the run engine, its wake-up listener and its queue
    gauges."""
    listener: list[BackgroundTask] = [components.changes.listen_forever] if components.changes is not None else []
    if not components.config.worker_enabled:
        return listener
    run_repo = components.run_repo

    async def sample_queue() -> None:
        await sample_queue_forever(run_repo, default_metrics())

    # The engine's loop itself (not a wrapper): supervision names it after its queue when it dies.
    tasks: list[BackgroundTask] = [components.worker.queue.run, sample_queue, *listener]
    if components.notify is not None:
        tasks.append(components.notify.listen_forever)
    return tasks


async def migrate(config: PipelinesConfig) -> None:
    await SCHEMA.migrate(config.common.database_url)


async def serve(config: PipelinesConfig) -> int:
    """Run the server until SIGTERM; health turns SERVING once the schema is migrated and reachable."""
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    return await serve_service(
        config.common, build(config), SCHEMA, registrations=registrations, background_tasks=background_tasks
    )


async def process_pending(config: PipelinesConfig) -> int:
    """Batch mode: execute every queued or orphaned run to its end, then exit."""
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    if config.common.auto_migrate:
        await migrate(config)
    components = build(config)
    try:
        executed = await components.worker.drain()
    finally:
        await components.close()
    _log.info("process-pending finished", extra={"runs": executed})
    print(f"processed {executed} run(s)")
    return 0
