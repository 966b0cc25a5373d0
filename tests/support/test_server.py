"""A test-only service process: run_server with raw-bytes methods `/test.Probe/{Whoami,Slow,Boom,Missing}`.

It runs one background loop, `probe_worker`, that waits forever (CONTENTPIPE_FAULT_INJECTION=true: SIGUSR1 crashes it).

Run as `python -m tests.support.test_server` with the scheduler's variables set; used to pin the runtime's
behaviour (auth principal, graceful shutdown with an in-flight call, error mapping) end to end.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import grpc
import grpc.aio
from contentpipe.common.auth import current_principal
from contentpipe.common.errors import InvalidArgument, NotFound
from contentpipe.common.server import ServiceRegistration, run_server
from contentpipe.common.settings import load_common_settings
from contentpipe.common.telemetry import setup_logging

SERVICE_NAME = "test.Probe"


async def whoami(request: bytes, context: Any) -> bytes:
    principal = current_principal()
    return f"{principal.user_id}|{principal.role}|{principal.on_behalf_of_service}".encode()


async def slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(float(request.decode() or "1"))
    return b"done"


async def boom(request: bytes, context: Any) -> bytes:
    raise RuntimeError("secret internals: password=hunter2")


async def missing(request: bytes, context: Any) -> bytes:
    if request == b"invalid":
        raise InvalidArgument.single("pipeline.name", "must not be empty")
    raise NotFound("pipeline not found", reason="PIPELINE_NOT_FOUND", metadata={"name": "pipelines/x"})


def _add(servicer: object, server: grpc.aio.Server) -> None:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(fn)
        for name, fn in {"Whoami": whoami, "Slow": slow, "Boom": boom, "Missing": missing}.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


async def probe_worker() -> None:
    await asyncio.Event().wait()


def main() -> int:
    # Reuses the scheduler's variables (port, secret, grace) so ServiceProcess can start it.
    settings = load_common_settings("scheduler", dict(os.environ))
    setup_logging("test", settings.log_level)
    registration = ServiceRegistration(full_name=SERVICE_NAME, add_to_server=_add, servicer=object())
    return asyncio.run(run_server(settings, [registration], background=[probe_worker]))


if __name__ == "__main__":
    sys.exit(main())
