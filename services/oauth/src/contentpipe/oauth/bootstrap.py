"""Composition root of the oauth service: settings, engine, HTTP client, use cases, servicers, workers.

The shape every service's bootstrap has: `build(config) -> Components` creates everything once (here with the
token cipher, read from a file off the event loop by `serve`), `registrations(components)` and
`background_tasks(components)` say what the server runs, `serve(config)` hands them to
`contentpipe.common.server.serve_service`, `migrate(config)` applies the schema. To add a service or a worker: build
it in `build()` (keep it on `Components`), append its registration in `registrations()` and its loop in
`background_tasks()`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from contentpipe.api.oauth.v1 import (
    connection_service_pb2,
    connection_service_pb2_grpc,
    posting_service_pb2,
    posting_service_pb2_grpc,
)
from contentpipe.common.database import Schema, create_engine, create_service_engine
from contentpipe.common.http import create_http_client
from contentpipe.common.pagination import PageTokenCodec
from contentpipe.common.server import BackgroundTask, ServiceRegistration, serve_service
from contentpipe.common.telemetry import setup_telemetry
from contentpipe.common.workqueue import PassLoop
from contentpipe.oauth.adapters.connection_repository import SqlConnectionStore
from contentpipe.oauth.adapters.crypto import TokenCipher, generate_key_entry, parse_token_keys
from contentpipe.oauth.adapters.platforms import build_platform_clients
from contentpipe.oauth.config import SERVICE, OauthConfig
from contentpipe.oauth.domain.connections import RefreshPolicy
from contentpipe.oauth.domain.connections_state import StateSigner
from contentpipe.oauth.entrypoints.grpc_connections import ConnectionServiceServicer
from contentpipe.oauth.posting_bootstrap import PostingApplication, build_posting
from contentpipe.oauth.service_layer.connections import ConnectionService, RedirectAllowlist
from contentpipe.oauth.service_layer.metrics import default_metrics, sample_queue_forever
from contentpipe.oauth.service_layer.tokens import TokenProvider
from sqlalchemy.ext.asyncio import AsyncEngine

SCHEMA = Schema.of(SERVICE, Path(__file__).parent / "migrations")
MIGRATIONS = SCHEMA.script_location
VERSION_TABLE = SCHEMA.version_table
_log = logging.getLogger(__name__)


def load_token_cipher(config: OauthConfig) -> TokenCipher:
    """OAUTH_TOKEN_KEYS, or (local use) a key generated once into the data dir with mode 0600."""
    raw = config.token_keys
    if raw is None:
        path = config.token_key_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_key_entry("local") + "\n")
            _log.warning("OAUTH_TOKEN_KEYS is not set: generated a local token key", extra={"path": str(path)})
        raw = path.read_text().strip()
    return TokenCipher(parse_token_keys(raw))


def state_secret(config: OauthConfig) -> bytes:
    """OAUTH_STATE_SECRET, else derived from the first token key (stable across replicas and restarts)."""
    if config.state_secret:
        return config.state_secret.encode()
    raw = config.token_keys or config.token_key_file.read_text().strip()
    first = parse_token_keys(raw)[0]
    return hashlib.sha256(b"contentpipe-oauth-state\x00" + first.key).digest()


@dataclass
class Components:
    """Everything built once per process; closed by `close()`."""

    config: OauthConfig
    engine: AsyncEngine
    http: httpx.AsyncClient
    cipher: TokenCipher
    connection_store: SqlConnectionStore
    connections: ConnectionService
    codec: PageTokenCodec
    posting: PostingApplication | None = None
    extra_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def token_provider(self) -> TokenProvider:
        """What posting uses to get fresh credentials (see CONTRIBUTING.md "oauth: token provider")."""
        return self.connections

    async def close(self) -> None:
        for hook in self.extra_shutdown:
            await hook()
        await self.connection_store.drain()  # a refresh the platform already performed must be saved
        await self.http.aclose()
        await self.engine.dispose()


def build(config: OauthConfig, cipher: TokenCipher) -> Components:
    workers = config.posting.worker.queue.concurrency if config.posting is not None else 0
    engine = create_service_engine(config.common, concurrency=workers)
    http = create_http_client(
        timeout=httpx.Timeout(config.http_timeout_seconds, connect=min(5.0, config.http_timeout_seconds))
    )
    store = SqlConnectionStore(engine, cipher, lease_seconds=config.refresh_lease_seconds)
    connections = ConnectionService(
        store,
        build_platform_clients(config.platforms, http),
        StateSigner(state_secret(config)),
        RedirectAllowlist(config.redirect_uris, config.redirect_prefixes),
        policy=RefreshPolicy(margin=timedelta(seconds=config.refresh_margin_seconds)),
        outbox_dir=str(config.outbox_dir),
        hosted_redirect_uri=config.callback_url,
    )
    secret = config.common.jwt_secret or base64.b64encode(state_secret(config)).decode()
    posting = build_posting(config.common, config.posting, engine, connections) if config.posting else None
    return Components(
        config=config,
        engine=engine,
        http=http,
        cipher=cipher,
        connection_store=store,
        connections=connections,
        codec=PageTokenCodec(secret, purpose="oauth-page-token"),
        posting=posting,
        extra_shutdown=[posting.close] if posting else [],
    )


def registrations(components: Components) -> list[ServiceRegistration]:
    """The gRPC services this process serves, with their servicers wired to their dependencies."""
    return [
        ServiceRegistration(
            full_name=connection_service_pb2.DESCRIPTOR.services_by_name["ConnectionService"].full_name,
            add_to_server=connection_service_pb2_grpc.add_ConnectionServiceServicer_to_server,
            servicer=ConnectionServiceServicer(components.connections, components.codec),
        ),
        components.posting.registration
        if components.posting
        else ServiceRegistration(
            full_name=posting_service_pb2.DESCRIPTOR.services_by_name["PostingService"].full_name,
            add_to_server=posting_service_pb2_grpc.add_PostingServiceServicer_to_server,
            servicer=posting_service_pb2_grpc.PostingServiceServicer(),  # type: ignore[abstract]  # UNIMPLEMENTED
        ),
    ]


def background_tasks(components: Components) -> list[BackgroundTask]:
    """Loops started once the service is SERVING and cancelled at shutdown."""
    config = components.config

    async def refresh_pass() -> bool:
        # A full batch means a backlog: the loop runs another pass at once (bounded), else waits an interval.
        return await components.connections.refresh_due(config.refresh_batch) >= config.refresh_batch

    token_refresher = PassLoop("token-refresher", refresh_pass, interval=config.refresh_interval_seconds)
    tasks: list[BackgroundTask] = [token_refresher.run]
    if components.posting is not None and components.posting.changes is not None:
        tasks.append(components.posting.changes.listen_forever)  # every replica serves WaitPost
    if components.posting is not None and components.posting.worker_enabled:
        tasks.append(components.posting.worker.run)  # the posting queue
        if components.posting.notify is not None:
            tasks.append(components.posting.notify.listen_forever)
        repository = components.posting.services.repository

        async def sample_posting_queue() -> None:
            await sample_queue_forever(repository, default_metrics())

        tasks.append(sample_posting_queue)
    if config.callback_url and config.callback_port:
        from contentpipe.common.asgi import serve_asgi
        from contentpipe.oauth.entrypoints.http_callback import callback_app

        app = callback_app(components.connections, urlsplit(config.callback_url).path or "/")

        async def hosted_callback() -> None:
            await serve_asgi(app, config.callback_host, config.callback_port, name="oauth-callback")

        tasks.append(hosted_callback)
    return tasks


async def migrate(config: OauthConfig) -> None:
    await SCHEMA.migrate(config.common.database_url)


async def rotate_keys(config: OauthConfig) -> int:
    """Re-encrypt every stored token and verifier under the first key of OAUTH_TOKEN_KEYS."""
    cipher = await asyncio.to_thread(load_token_cipher, config)
    engine = create_engine(config.common.database_url)
    try:
        return await SqlConnectionStore(engine, cipher).rotate_keys()
    finally:
        await engine.dispose()


async def serve(config: OauthConfig) -> int:
    """Run the server until SIGTERM; health turns SERVING once the schema is migrated and reachable."""
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    cipher = await asyncio.to_thread(load_token_cipher, config)
    components = build(config, cipher)
    return await serve_service(
        config.common, components, SCHEMA, registrations=registrations, background_tasks=background_tasks
    )
