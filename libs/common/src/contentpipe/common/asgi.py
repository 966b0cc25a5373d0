"""A small HTTP side port next to a service's gRPC server: an ASGI app on uvicorn, run as a background task.

uvicorn is embedded without its own signal handling: the gRPC server's shutdown owns SIGTERM and cancels the
background task, which then stops uvicorn gracefully (listener closed, requests in flight finished).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator
from typing import Any

import uvicorn

_log = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_SECONDS = 5


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals belong to the host process (run_server)


async def serve_asgi(
    app: Callable[..., Any],
    host: str,
    port: int,
    *,
    name: str,
    bound_port: Callable[[int], None] | None = None,
) -> None:
    """Serve `app` on host:port until cancelled; `bound_port` receives the port once listening (0 → a free one)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = _EmbeddedServer(config)
    serving = asyncio.create_task(server.serve(), name=f"{name}-http")
    while not server.started:
        if serving.done():  # uvicorn exits (SystemExit) when it cannot bind
            with contextlib.suppress(SystemExit):
                await serving
            raise OSError(f"{name}: cannot listen on {host}:{port} (port in use or not allowed)")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    _log.info("http listening", extra={"server": name, "address": f"{host}:{port}"})
    if bound_port is not None:
        bound_port(port)
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True  # stop accepting, finish requests in flight (bounded)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, timeout=GRACEFUL_SHUTDOWN_SECONDS * 2)
        raise
