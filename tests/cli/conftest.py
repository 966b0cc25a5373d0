"""Fixtures for CLI tests: run `contentpipe` as a subprocess with a clean environment, and fake gRPC services."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from tests.cli import harness
from tests.support import TEST_JWT_SECRET, free_port, mint_token

RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli() -> RunCli:
    """`run_cli("pipelines", "list", env={...})` runs `python -m contentpipe.cli ...` (stdout not a TTY)."""
    return harness.run_cli


@pytest.fixture
def fake_server() -> Iterator[Callable[..., str]]:
    """Start a sync gRPC server on a free loopback port with the given (servicer, add_fn) pairs; returns host:port."""
    servers: list[grpc.Server] = []

    def start(*services: tuple[object, Callable[[object, grpc.Server], None]]) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for servicer, add in services:
            add(servicer, server)
        port = free_port()
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=None)


@pytest.fixture
def token() -> str:
    return mint_token(TEST_JWT_SECRET, "user-1")
