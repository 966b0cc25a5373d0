"""Supervision of background loops: a dead worker loop turns health NOT_SERVING and the process exits non-zero."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc.aio
import pytest
from contentpipe.common.server import EXIT_BACKGROUND_FAILED, run_server
from contentpipe.common.settings import load_common_settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import TEST_JWT_SECRET, ServiceProcess, free_port

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _watch_until(address: str, wanted: int, seen: list[int], watching: asyncio.Event) -> None:
    """Follow the real gRPC health service's Watch stream until it reports `wanted`."""
    async with grpc.aio.insecure_channel(address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        async for response in stream:
            seen.append(response.status)
            if response.status == SERVING:
                watching.set()
            if response.status == wanted:
                return


async def test_a_crashing_worker_loop_turns_health_not_serving_and_exits_non_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    settings = load_common_settings(
        "scheduler",
        {
            "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
            "SCHEDULER_GRPC_PORT": str(port),
            "CONTENTPIPE_GRPC_REFLECTION": "0",
            "CONTENTPIPE_SHUTDOWN_GRACE_SECONDS": "1",
        },
    )
    crash = asyncio.Event()
    other_loop_stopped = asyncio.Event()

    async def posting_worker() -> None:
        await crash.wait()
        raise RuntimeError("claim loop bug")

    async def token_refresher() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            other_loop_stopped.set()

    server = asyncio.create_task(run_server(settings, [], background=[posting_worker, token_refresher]))
    seen: list[int] = []
    watching = asyncio.Event()
    watcher = asyncio.create_task(_watch_until(f"127.0.0.1:{port}", NOT_SERVING, seen, watching))
    try:
        await asyncio.wait_for(watching.wait(), timeout=30)
        crash.set()
        await asyncio.wait_for(watcher, timeout=30)  # the health service itself reported NOT_SERVING
        assert await asyncio.wait_for(server, timeout=30) == EXIT_BACKGROUND_FAILED
    finally:
        for task in (watcher, server):
            task.cancel()
        await asyncio.gather(watcher, server, return_exceptions=True)
    assert seen[-1] == NOT_SERVING
    assert other_loop_stopped.is_set()  # the other loops were stopped (their leases given back), not abandoned
    died = [r for r in caplog.records if r.getMessage().startswith("background loop died")]
    assert len(died) == 1 and str(getattr(died[0], "loop", "")).endswith("posting_worker")


def test_fault_injected_into_a_service_process_loop_makes_it_unhealthy_and_exit_non_zero(tmp_path: Path) -> None:
    proc = ServiceProcess(
        "scheduler",
        tmp_path,
        module="tests.support.test_server",
        env={"CONTENTPIPE_FAULT_INJECTION": "true", "CONTENTPIPE_SHUTDOWN_GRACE_SECONDS": "1"},
    )
    proc.start()
    try:
        assert proc.process is not None

        async def crash_and_watch() -> list[int]:
            seen: list[int] = []
            watching = asyncio.Event()
            watcher = asyncio.create_task(_watch_until(proc.address, NOT_SERVING, seen, watching))
            await asyncio.wait_for(watching.wait(), timeout=30)
            assert proc.process is not None
            proc.process.send_signal(signal.SIGUSR1)
            await asyncio.wait_for(watcher, timeout=30)
            return seen

        seen = asyncio.run(crash_and_watch())
        assert seen[-1] == NOT_SERVING
        assert proc.process.wait(timeout=30) == EXIT_BACKGROUND_FAILED
        logs = proc.logs()
        assert "background loop died" in logs and "probe_worker" in logs and "InjectedFault" in logs
    finally:
        proc.terminate()
