"""Composition root of the scheduler service: settings, engine, servicers, server."""

from __future__ import annotations

from pathlib import Path

from contentpipe.api.scheduler.v1 import (
    notification_service_pb2,
    notification_service_pb2_grpc,
    scheduler_service_pb2,
    scheduler_service_pb2_grpc,
)
from contentpipe.common.channels import create_channel
from contentpipe.common.database import (
    create_engine,
    database_ready,
    run_migrations,
    version_table_for,
)
from contentpipe.common.server import ServiceRegistration, run_server
from contentpipe.common.telemetry import setup_telemetry
from contentpipe.scheduler.config import SERVICE, SchedulerConfig
from contentpipe.scheduler.entrypoints.grpc_notifications import NotificationServiceServicer
from contentpipe.scheduler.entrypoints.grpc_scheduler import SchedulerServiceServicer

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = version_table_for(SERVICE)


def registrations() -> list[ServiceRegistration]:
    """The gRPC services this process serves, with their servicers wired to their dependencies."""
    return [
        ServiceRegistration(
            full_name=scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name,
            add_to_server=scheduler_service_pb2_grpc.add_SchedulerServiceServicer_to_server,
            servicer=SchedulerServiceServicer(),  # type: ignore[abstract]  # RPCs not yet implemented answer UNIMPLEMENTED
        ),
        ServiceRegistration(
            full_name=notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name,
            add_to_server=notification_service_pb2_grpc.add_NotificationServiceServicer_to_server,
            servicer=NotificationServiceServicer(),  # type: ignore[abstract]  # RPCs not yet implemented answer UNIMPLEMENTED
        ),
    ]


async def migrate(config: SchedulerConfig) -> None:
    await run_migrations(config.common.database_url, MIGRATIONS, VERSION_TABLE)


async def serve(config: SchedulerConfig) -> int:
    """Run the server until SIGTERM; health turns SERVING once the schema is migrated and reachable."""
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    engine = create_engine(config.common.database_url)

    # One channel per peer for the whole process; adapters build stubs on them.
    channels = {peer: create_channel(config.common.peers[peer]) for peer in ("pipelines",)}

    async def ready() -> bool:
        if config.common.auto_migrate:
            await migrate(config)
        return await database_ready(engine, VERSION_TABLE, MIGRATIONS)

    async def close_channels() -> None:
        for channel in channels.values():
            await channel.close(None)

    return await run_server(
        config.common,
        registrations(),
        on_ready=ready,
        on_shutdown=[close_channels, engine.dispose],
    )
