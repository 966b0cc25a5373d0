"""serve_service, the one `serve` of every bootstrap: migrate, wait for readiness, run the loops, close once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import grpc.aio
import pytest
from contentpipe.common.database import create_engine
from contentpipe.common.server import BackgroundTask, ServiceRegistration, serve_service
from contentpipe.common.settings import load_common_settings
from contentpipe.scheduler.bootstrap import SCHEMA
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support import TEST_JWT_SECRET, free_port

pytestmark = pytest.mark.integration


@dataclass
class _Components:
    engine: AsyncEngine
    events: list[str] = field(default_factory=list)
    loop_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def close(self) -> None:
        self.events.append("closed")
        await self.engine.dispose()


def _no_registrations(components: _Components) -> list[ServiceRegistration]:
    return []


def _one_loop(components: _Components) -> list[BackgroundTask]:
    async def loop() -> None:
        components.events.append("loop started")
        components.loop_started.set()
        await asyncio.Event().wait()

    return [loop]


async def test_serve_service_migrates_waits_for_readiness_runs_loops_then_closes_once(tmp_path: Path) -> None:
    port = free_port()
    settings = load_common_settings(
        "scheduler",
        {
            "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
            "CONTENTPIPE_DATA_DIR": str(tmp_path),
            "SCHEDULER_GRPC_PORT": str(port),
            "CONTENTPIPE_GRPC_REFLECTION": "0",
            "CONTENTPIPE_SHUTDOWN_GRACE_SECONDS": "1",
        },
    )
    components = _Components(create_engine(settings.database_url))
    storage_answers = [False, True]  # a dependency that is not there on the first check

    async def storage_ready() -> bool:
        components.events.append("readiness checked")
        return storage_answers.pop(0)

    stop = asyncio.Event()
    served = asyncio.create_task(
        serve_service(
            settings,
            components,
            SCHEMA,
            registrations=_no_registrations,
            background_tasks=_one_loop,
            also_ready=storage_ready,
            stop_event=stop,
        )
    )
    await asyncio.wait_for(components.loop_started.wait(), timeout=30)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    check = create_engine(settings.database_url)
    try:
        assert await SCHEMA.ready(check)  # auto_migrate applied the schema
    finally:
        await check.dispose()
    stop.set()
    assert await asyncio.wait_for(served, timeout=30) == 0
    assert components.events == ["readiness checked", "readiness checked", "loop started", "closed"]
