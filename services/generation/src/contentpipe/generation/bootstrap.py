"""Composition root of the generation service: engine, providers, storage, worker, servicers, server.

The shape every service's bootstrap has: `build(config) -> Components` creates everything once,
`registrations(components)` and `background_tasks(components)` say what the server runs, `serve(config)` hands
them to `contentpipe.common.server.serve_service`, `migrate(config)` applies the schema.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from contentpipe.api.generation.v1 import generation_service_pb2, generation_service_pb2_grpc
from contentpipe.common.changes import ChangeNotifier
from contentpipe.common.database import Schema, create_service_engine
from contentpipe.common.http import OutboundUrlPolicy, create_http_client, shared_tls_context
from contentpipe.common.notify import ChangeChannel, PgWakeChannel, change_channel, close_channels, wake_channel
from contentpipe.common.pagination import PageTokenCodec
from contentpipe.common.server import BackgroundTask, ServiceRegistration, serve_service
from contentpipe.common.telemetry import setup_telemetry
from contentpipe.generation.adapters.cog import CogProvider
from contentpipe.generation.adapters.local_provider import LocalProvider
from contentpipe.generation.adapters.replicate import ReplicateProvider, ReplicateSettings
from contentpipe.generation.adapters.repository import SqlGenerationRepository
from contentpipe.generation.adapters.storage import BlobBackend, LocalBlobs, StoredAssets
from contentpipe.generation.config import SERVICE, GenerationConfig
from contentpipe.generation.domain.catalogue import LOCAL_MODELS, Catalogue, cog_models, replicate_models
from contentpipe.generation.entrypoints.grpc_generation import GenerationServiceServicer
from contentpipe.generation.service_layer.ports import Provider, RateLimiter
from contentpipe.generation.service_layer.runner import GenerationRunner
from contentpipe.generation.service_layer.services import GenerationServices
from contentpipe.generation.service_layer.watch import NotifyingRepository
from contentpipe.generation.service_layer.worker import (
    GenerationWorker,
    TokenBucket,
    WorkerCanceller,
    WorkerSettings,
)
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA = Schema.of(SERVICE, Path(__file__).parent / "migrations")
MIGRATIONS = SCHEMA.script_location
VERSION_TABLE = SCHEMA.version_table
# httpcore checks every idle connection of a pool (a poll of its socket) each time a request starts or ends, so a
# pool's CPU per request grows with its size: 8 used ~10 % less of the generation process's CPU than 32 in a
# 500-generation fan-out.
POOL_SIZE = 8


@dataclass(slots=True)
class Components:
    """Everything built once per process (so tests and the bench can build the same graph); `close()` releases it."""

    config: GenerationConfig
    engine: AsyncEngine
    services: GenerationServices
    worker: GenerationWorker
    replicate: ReplicateProvider
    cog: CogProvider
    blobs: BlobBackend
    clients: list[httpx.AsyncClient]
    page_tokens: PageTokenCodec
    # Another replica's CreateGeneration wakes this worker (PostgreSQL LISTEN/NOTIFY; SQLite: in-process only).
    notify: PgWakeChannel | None = None
    # A generation saved by another replica wakes WaitGeneration here (PostgreSQL; SQLite: one process).
    changes: ChangeChannel | None = None

    async def close(self) -> None:
        await close_channels(self.notify, self.changes)
        for client in self.clients:
            await client.aclose()
        await self.blobs.aclose()
        await self.engine.dispose()


def scratch_dir(config: GenerationConfig) -> Path:
    """Where outputs wait before storage (webhook bodies spooled under it: ingest takes files only from here)."""
    return config.common.data_dir / "tmp" / "generation"


def cog_webhook_key(config: GenerationConfig) -> bytes:
    return hashlib.sha256(f"cog-webhook:{config.webhook_secret}".encode()).digest()


def cog_webhook_signer(config: GenerationConfig) -> Callable[[str], str]:
    """Signs the Cog webhook URLs the way the webhook endpoint checks them (imported only when webhooks are on)."""
    from contentpipe.generation.entrypoints.webhooks import cog_signature

    key = cog_webhook_key(config)
    return lambda prediction_id: cog_signature(key, prediction_id)


def build_catalogue(config: GenerationConfig) -> Catalogue:
    replicate = config.replicate
    models = [*LOCAL_MODELS, *cog_models(config.cog_models)]
    unconfigured: dict[str, str] = {}
    if replicate is not None and replicate.api_token:
        models.extend(
            replicate_models(
                video_model=replicate.video_model, image_model=replicate.image_model, text_model=replicate.text_model
            )
        )
    else:
        unconfigured["replicate"] = "set REPLICATE_API_TOKEN on the generation service to enable it"
    if not config.cog_models:
        unconfigured["cog"] = (
            "set COG_MODELS (name:KIND=http://host:port, comma-separated) on the generation service to enable it"
        )
    return Catalogue(models, default_provider=config.default_provider, unconfigured=unconfigured)


def build(config: GenerationConfig) -> Components:
    assert config.replicate is not None and config.storage is not None
    storage = config.storage
    engine = create_service_engine(config.common, concurrency=config.queue.concurrency)
    changes = ChangeNotifier(recheck_seconds=config.common.long_poll_recheck_seconds)
    stored = SqlGenerationRepository(engine)
    repository = NotifyingRepository(stored, changes)
    # The worker's saves are fenced by its lease: a replica that lost a generation cannot overwrite the new holder.
    leased = NotifyingRepository(stored.leased_by(config.queue.owner), changes)
    catalogue = build_catalogue(config)
    # One connection per concurrent prediction (a `Prefer: wait` create holds its connection), plus polls/cancels,
    # spread over pools of POOL_SIZE (a large httpx pool costs CPU per request).
    shards = -(-(config.limits["replicate"].concurrency + 20) // POOL_SIZE)
    replicate_clients = [
        create_http_client(
            transport=httpx.AsyncHTTPTransport(
                verify=shared_tls_context(),
                limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
            )
        )
        for _ in range(shards)
    ]
    fetch_client = create_http_client(
        timeout=httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=30.0), max_connections=50
    )
    cog_client = create_http_client(max_connections=config.limits["cog"].concurrency + 20)
    clients = [*replicate_clients, fetch_client, cog_client]
    blobs: BlobBackend
    if storage.backend == "s3":
        # Imported only here: S3's libraries cost ~15 MB in a process that stores on local disk.
        from contentpipe.generation.adapters.s3_blobs import S3Blobs, S3Settings

        assert storage.s3_endpoint_url and storage.s3_access_key_id and storage.s3_secret_access_key
        blobs = S3Blobs(
            S3Settings(
                endpoint_url=storage.s3_endpoint_url,
                bucket=storage.bucket,
                region=storage.s3_region,
                access_key_id=storage.s3_access_key_id,
                secret_access_key=storage.s3_secret_access_key,
                public_base_url=storage.public_base_url,
                presign_seconds=storage.s3_presign_seconds,
                create_bucket=storage.s3_create_bucket,
            ),
        )
    else:
        blobs = LocalBlobs(storage.local_dir, storage.bucket, storage.public_base_url)
    assets = StoredAssets(
        blobs,
        fetch_client,
        scratch_dir=scratch_dir(config),
        max_bytes=storage.max_output_bytes,
    )
    r = config.replicate
    replicate = ReplicateProvider(
        ReplicateSettings(
            base_url=r.base_url,
            api_token=r.api_token or "",
            prefer_wait_seconds=r.prefer_wait_seconds,
            poll_initial_seconds=r.poll_initial_seconds,
            poll_max_seconds=r.poll_max_seconds,
            send_cancel_after=r.send_cancel_after,
            webhook_url=r.webhook_url,
            lookup_attempts=r.lookup_attempts,
            lookup_delay_seconds=r.lookup_delay_seconds,
        ),
        replicate_clients,
        claims=repository,
    )
    cog = CogProvider(
        cog_client,
        webhook_base_url=config.webhook_base_url if config.webhook_port else None,
        sign_webhook=cog_webhook_signer(config) if config.webhook_port else None,
        deliveries=stored,  # webhook deliveries change no generation: nothing to notify
        redelivery_wait_seconds=config.cog_redelivery_wait_seconds,
    )
    providers: dict[str, Provider] = {
        "local": LocalProvider(assets.scratch_file, time_limit_seconds=config.local_time_limit_seconds),
        "replicate": replicate,
        "cog": cog,
    }
    limiters: dict[str, RateLimiter] = {
        name: TokenBucket(limit.creates_per_second)
        for name, limit in config.limits.items()
        if limit.creates_per_second > 0
    }
    runner = GenerationRunner(leased, providers, catalogue, assets, rate_limiters=limiters)
    worker = GenerationWorker(
        leased,
        runner,
        WorkerSettings(
            queue=config.queue,
            provider_concurrency={name: limit.concurrency for name, limit in config.limits.items()},
        ),
    )
    policy = OutboundUrlPolicy(
        allow_private=config.common.allow_private_urls, field="generation.options.input_image_uri"
    )
    services = GenerationServices(
        repository=repository,
        catalogue=catalogue,
        assets=assets,
        url_check=policy.check,
        canceller=WorkerCanceller(worker, runner),
        deadline=timedelta(seconds=config.deadline_seconds),
        wake_worker=worker.wake,  # also wakes the other replicas (NOTIFY), even when this one runs no worker
        dispatch=worker.queue,
        changes=changes,
    )
    return Components(
        config=config,
        engine=engine,
        services=services,
        worker=worker,
        replicate=replicate,
        cog=cog,
        blobs=blobs,
        clients=clients,
        page_tokens=PageTokenCodec(config.common.jwt_secret or config.common.jwks_url, purpose="generation-page"),
        notify=wake_channel(engine, "contentpipe_generation", worker.queue.wake),
        changes=change_channel(engine, "contentpipe_generation_changes", changes),
    )


def registrations(components: Components) -> list[ServiceRegistration]:
    """The gRPC services this process serves, with their servicers wired to their dependencies."""
    return [
        ServiceRegistration(
            full_name=generation_service_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
            add_to_server=generation_service_pb2_grpc.add_GenerationServiceServicer_to_server,
            servicer=GenerationServiceServicer(components.services, components.page_tokens),
        ),
    ]


def background_tasks(components: Components) -> list[BackgroundTask]:
    """Loops started once the service is SERVING and cancelled at shutdown: the worker, its wake-up listener, the
    long polls' change listener (every replica serves WaitGeneration), and the webhook listener when webhooks are on."""
    config = components.config
    tasks: list[BackgroundTask] = []
    if components.changes is not None:
        tasks.append(components.changes.listen_forever)
    if config.worker_enabled:
        tasks.append(components.worker.run)
        if components.notify is not None:
            tasks.append(components.notify.listen_forever)
    if config.webhook_port:
        tasks.append(_webhook_listener(components))
    return tasks


def _webhook_listener(components: Components) -> BackgroundTask:
    from contentpipe.generation.entrypoints.webhook_spool import remove_stale_files
    from contentpipe.generation.entrypoints.webhooks import WebhookSettings, serve_webhooks, webhook_app

    config = components.config
    spool = scratch_dir(config) / "webhooks"
    hooks = webhook_app(
        WebhookSettings(
            cog_key=cog_webhook_key(config),
            spool_dir=spool,
            max_body_bytes=config.webhook_max_body_bytes,
            replicate_secret=config.replicate.webhook_secret if config.replicate else None,
        ),
        components.cog,
        components.replicate.deliver_webhook,
    )

    async def webhooks() -> None:
        # Results spooled before a restart and never taken: a stored delivery outlives no generation's deadline.
        await asyncio.to_thread(remove_stale_files, spool, 2 * config.deadline_seconds)
        await serve_webhooks(hooks, config.webhook_host, config.webhook_port)

    return webhooks


async def migrate(config: GenerationConfig) -> None:
    await SCHEMA.migrate(config.common.database_url)


async def serve(config: GenerationConfig) -> int:
    """Run the server until SIGTERM; health turns SERVING once the schema is migrated and storage reachable."""
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    components = build(config)
    blobs = components.blobs

    async def storage_ready() -> bool:
        await blobs.ensure_bucket()
        return True

    return await serve_service(
        config.common,
        components,
        SCHEMA,
        registrations=registrations,
        background_tasks=background_tasks,
        also_ready=storage_ready,
    )
