"""Composition root of the pipelines service: settings, engine, servicers, server."""

from __future__ import annotations

from pathlib import Path

from contentpipe.api.pipelines.v1 import pipeline_service_pb2, pipeline_service_pb2_grpc
from contentpipe.common.channels import create_channel
from contentpipe.common.database import (
    create_engine,
    database_ready,
    run_migrations,
    version_table_for,
)
from contentpipe.common.server import ServiceRegistration, run_server
from contentpipe.common.telemetry import setup_telemetry
from contentpipe.pipelines.config import SERVICE, PipelinesConfig
from contentpipe.pipelines.entrypoints.grpc_pipelines import PipelineServiceServicer

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = version_table_for(SERVICE)


def registrations() -> list[ServiceRegistration]:
    """The gRPC services this process serves, with their servicers wired to their dependencies."""
    return [
        ServiceRegistration(
            full_name=pipeline_service_pb2.DESCRIPTOR.services_by_name["PipelineService"].full_name,
            add_to_server=pipeline_service_pb2_grpc.add_PipelineServiceServicer_to_server,
            servicer=PipelineServiceServicer(),  # type: ignore[abstract]  # RPCs not yet implemented answer UNIMPLEMENTED
        ),
    ]


async def migrate(config: PipelinesConfig) -> None:
    await run_migrations(config.common.database_url, MIGRATIONS, VERSION_TABLE)


async def serve(config: PipelinesConfig) -> int:
    """Run the server until SIGTERM; health turns SERVING once the schema is migrated and reachable."""
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    engine = create_engine(config.common.database_url)

    # One channel per peer for the whole process; adapters build stubs on them.
    channels = {
        peer: create_channel(config.common.peers[peer])
        for peer in (
            "generation",
            "oauth",
            "scheduler",
        )
    }

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
