"""Fixtures of the security suites: the four services running together on SQLite or PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.security.fakes import ExternalFakes
from tests.security.stack import Stack
from tests.support.postgres import create_database, drop_database, postgres_available

STACK_BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def external_fakes() -> Iterator[ExternalFakes]:
    with ExternalFakes() as fakes:
        yield fakes


@pytest.fixture(scope="session", params=STACK_BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, external_fakes: ExternalFakes
) -> Iterator[Stack]:
    """The four services, wired together and to the loopback fakes; one database per service."""
    backend = str(request.param)
    databases: list[str] = []
    urls: dict[str, str] = {}
    if backend == "postgresql":
        reason = postgres_available()
        if reason is not None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        for service in ("generation", "oauth", "pipelines", "scheduler"):
            name, url = create_database()
            databases.append(name)
            urls[service] = url
    workdir = tmp_path_factory.mktemp(f"stack-{backend}")
    stack = Stack(workdir, database_urls=urls, env=external_fakes.service_env(workdir))
    stack.backend = backend
    try:
        yield stack.start()
    finally:
        stack.stop()
        for name in databases:
            drop_database(name)
