"""Fixtures for CLI tests: run `contentpipe` as a subprocess with a clean environment, and fake gRPC services."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.support import TEST_JWT_SECRET, free_port, mint_token

REPO_ROOT = Path(__file__).resolve().parents[2]
RunCli = Callable[..., subprocess.CompletedProcess[str]]


def cli_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without anything that would point the CLI at real services or tokens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTENTPIPE_")}
    env.update({"NO_COLOR": "1", "CONTENTPIPE_CONFIG": "/nonexistent/contentpipe.toml", "COLUMNS": "200"})
    env.update(extra or {})
    return env


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """`run_cli("pipelines", "list", env={...})` runs `python -m contentpipe.cli ...` (stdout not a TTY)."""

    def run(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120, stdin: str | None = None):
        return subprocess.run(  # noqa: PLW1510 - callers assert on the exit code
            [sys.executable, "-m", "contentpipe.cli", *args],
            cwd=REPO_ROOT,
            env=cli_environ(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )

    return run


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
