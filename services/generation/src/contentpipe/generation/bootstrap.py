"""Composition root of the generation service: settings, engine, servicers, server."""

from __future__ import annotations

from pathlib import Path

from contentpipe.api.generation.v1 import generation_service_pb2, generation_service_pb2_grpc
from contentpipe.common.database import (
    create_engine,
    database_ready,
    run_migrations,
    version_table_for,
)
from contentpipe.common.server import ServiceRegistration, run_server
from contentpipe.common.telemetry import setup_telemetry
from contentpipe.generation.config import SERVICE, GenerationConfig
from contentpipe.generation.entrypoints.grpc_generation import GenerationServiceServicer

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = version_table_for(SERVICE)


def registrations() -> list[ServiceRegistration]:
    """The gRPC services this process serves, with their servicers wired to their dependencies."""
    return [
        ServiceRegistration(
            full_name=generation_service_pb2.DESCRIPTOR.services_by_name["GenerationService"].full_name,
            add_to_server=generation_service_pb2_grpc.add_GenerationServiceServicer_to_server,
            servicer=GenerationServiceServicer(),  # type: ignore[abstract]  # RPCs not yet implemented answer UNIMPLEMENTED
        ),
    ]


async def migrate(config: GenerationConfig) -> None:
    await run_migrations(config.common.database_url, MIGRATIONS, VERSION_TABLE)


async def serve(config: GenerationConfig) -> int:
    """Run the server until SIGTERM; health turns SERVING once the schema is migrated and reachable."""
    setup_telemetry(SERVICE, log_level=config.common.log_level, otlp_endpoint=config.common.otlp_endpoint)
    engine = create_engine(config.common.database_url)

    async def ready() -> bool:
        if config.common.auto_migrate:
            await migrate(config)
        return await database_ready(engine, VERSION_TABLE, MIGRATIONS)

    return await run_server(
        config.common,
        registrations(),
        on_ready=ready,
        on_shutdown=[engine.dispose],
    )
