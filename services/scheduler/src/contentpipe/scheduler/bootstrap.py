"""Composition root of the scheduler service: engine, peers, use cases, servicers, the processing loop.

The shape every service's bootstrap has: `build(config) -> Components` creates everything once,
`registrations(components)` and `background_tasks(components)` say what the server runs, `serve(config)` hands
them to `contentpipe.common.server.serve_service`, `migrate(config)` applies the schema; `tick(config)` is the
one-pass entry point for a CronJob.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc.aio
import httpx
from contentpipe.api.scheduler.v1 import (
    notification_service_pb2,
    notification_service_pb2_grpc,
    scheduler_service_pb2,
    scheduler_service_pb2_grpc,
)
from contentpipe.common.channels import ServiceToken, create_channel
from contentpipe.common.database import Schema, create_service_engine
from contentpipe.common.errors import ContentpipeError
from contentpipe.common.http import create_http_client
from contentpipe.common.ids import new_id
from contentpipe.common.pagination import PageTokenCodec
from contentpipe.common.server import BackgroundTask, ServiceRegistration, serve_service
from contentpipe.common.telemetry import setup_telemetry
from contentpipe.common.workqueue import PassLoop
from contentpipe.scheduler.adapters.pipelines_client import GrpcPipelines
from contentpipe.scheduler.adapters.sql_store import SqlSchedulerStore
from contentpipe.scheduler.adapters.webhook import StandardWebhookSender
from contentpipe.scheduler.config import SERVICE, SchedulerConfig
from contentpipe.scheduler.entrypoints.grpc_notifications import NotificationServiceServicer
from contentpipe.scheduler.entrypoints.grpc_scheduler import SchedulerServiceServicer
from contentpipe.scheduler.service_layer.jobs import JobService
from contentpipe.scheduler.service_layer.notifications import NotificationService, WebhookDelivery
from contentpipe.scheduler.service_layer.processing import ProcessingSettings, Processor
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA = Schema.of(SERVICE, Path(__file__).parent / "migrations")
MIGRATIONS = SCHEMA.script_location
VERSION_TABLE = SCHEMA.version_table
_log = logging.getLogger(__name__)

EXIT_DATABASE_UNREACHABLE = 1
EXIT_PIPELINES_UNREACHABLE = 3


@dataclass(slots=True)
class Components:
    """Everything built once per process; `close()` gives back held leases, then closes channel, client, engine."""

    config: SchedulerConfig
    engine: AsyncEngine
    channel: grpc.aio.Channel
    http: httpx.AsyncClient | None
    store: SqlSchedulerStore
    pipelines: GrpcPipelines
    processor: Processor
    jobs: JobService
    notifications: NotificationService
    delivery: WebhookDelivery | None
    page_tokens: PageTokenCodec

    async def close(self) -> None:
        # The processing loop was cancelled mid-pass: let another replica go on at once instead of after the lease.
        try:
            released = await self.processor.release_held()
            if released:
                _log.info("released leases at shutdown", extra={"released": released})
        finally:  # even when the database is gone (the leases then expire by themselves)
            await self.channel.close(None)
            if self.http is not None:
                await self.http.aclose()
            await self.engine.dispose()


def build(config: SchedulerConfig) -> Components:
    """Create every long-lived object once (engine, channel, http client) and wire the use cases."""
    engine = create_service_engine(config.common, concurrency=config.dispatch_concurrency)
    channel = create_channel(config.common.peers["pipelines"], tls=config.common.tls)
    secret = config.common.jwt_secret
    token = ServiceToken(secret, SERVICE) if secret else None
    pipelines = GrpcPipelines(channel, token)
    store = SqlSchedulerStore(engine)
    lease_owner = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
    processor = Processor(
        store,
        pipelines,
        lease_owner=lease_owner,
        settings=ProcessingSettings(
            batch_size=config.batch_size,
            dispatch_concurrency=config.dispatch_concurrency,
            trigger_batch_size=config.trigger_batch_size,
            poll_interval=timedelta(seconds=config.poll_interval_seconds),
        ),
        deliver_notifications=config.webhook_url is not None,
    )
    http: httpx.AsyncClient | None = None
    delivery: WebhookDelivery | None = None
    if config.webhook_url is not None and config.webhook_secret is not None:
        http = create_http_client(timeout=httpx.Timeout(10.0, connect=5.0))
        sender = StandardWebhookSender(http, config.webhook_url, config.webhook_secret)
        delivery = WebhookDelivery(store, sender, lease_owner=lease_owner)
    return Components(
        config=config,
        engine=engine,
        channel=channel,
        http=http,
        store=store,
        pipelines=pipelines,
        processor=processor,
        jobs=JobService(store, pipelines, processor),
        notifications=NotificationService(store),
        delivery=delivery,
        page_tokens=PageTokenCodec(config.common.jwt_secret),
    )


def registrations(components: Components) -> list[ServiceRegistration]:
    """The gRPC services this process serves, with their servicers wired to their dependencies."""
    codec = components.page_tokens
    return [
        ServiceRegistration(
            full_name=scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name,
            add_to_server=scheduler_service_pb2_grpc.add_SchedulerServiceServicer_to_server,
            servicer=SchedulerServiceServicer(components.jobs, components.processor, codec),
        ),
        ServiceRegistration(
            full_name=notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
            add_to_server=notification_service_pb2_grpc.add_NotificationServiceServicer_to_server,
            servicer=NotificationServiceServicer(components.notifications, codec),
        ),
    ]


def background_tasks(components: Components) -> list[BackgroundTask]:
    """Loops started once the service is SERVING and cancelled at shutdown: the processing of due jobs."""
    limit = components.config.process_limit

    async def processing_pass() -> bool:
        _, summary = await _one_pass(components, limit)
        if any(summary[k] for k in ("claimed", "triggered", "reconciled", "errors")):
            _log.info("processing pass", extra=summary)
        return int(str(summary["claimed"])) >= limit  # a full pass: more may be due, go on

    # The due-jobs queue on the common runtime: a pass when due, failures retried, a crash restarts the process.
    processing = PassLoop(
        "scheduler-processing",
        processing_pass,
        interval=components.config.process_interval_seconds,
        max_passes_in_a_row=None,
    )
    return [processing.run]


async def migrate(config: SchedulerConfig) -> None:
    await SCHEMA.migrate(config.common.database_url)


async def _one_pass(components: Components, limit: int) -> tuple[int, dict[str, object]]:
    result = await components.processor.process(limit)
    delivered = await components.delivery.deliver_due() if components.delivery is not None else 0
    summary: dict[str, object] = {
        "claimed": result.claimed,
        "triggered": result.triggered,
        "reconciled": result.reconciled,
        "not_run": result.not_run,
        "errors": result.errors,
        "webhooks_delivered": delivered,
    }
    return (EXIT_PIPELINES_UNREACHABLE if result.unreachable else 0), summary


async def serve(config: SchedulerConfig) -> int:
    """Run the server and the processing loop until SIGTERM; health SERVING once the schema is ready."""
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    return await serve_service(
        config.common, build(config), SCHEMA, registrations=registrations, background_tasks=background_tasks
    )


async def tick(config: SchedulerConfig, limit: int | None = None) -> int:
    """One reconcile + process pass for a Kubernetes CronJob; exit 0, or non-zero when a peer is down."""
    components = build(config)
    try:
        try:
            if config.common.auto_migrate and not await SCHEMA.ready(components.engine):
                await migrate(config)
            await components.store.ping()
        except Exception as exc:
            print(f"contentpipe-scheduler tick: database unreachable: {type(exc).__name__}", file=sys.stderr)
            return EXIT_DATABASE_UNREACHABLE
        try:
            await components.pipelines.check_reachable()
        except ContentpipeError as exc:
            print(f"contentpipe-scheduler tick: {exc.message}", file=sys.stderr)
            return EXIT_PIPELINES_UNREACHABLE
        code, summary = await _one_pass(components, limit or config.process_limit)
        print(json.dumps(summary, sort_keys=True))
        if code:
            print("contentpipe-scheduler tick: the pipelines service became unreachable", file=sys.stderr)
        return code
    finally:
        with contextlib.suppress(Exception):
            await components.close()
