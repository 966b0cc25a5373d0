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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The secrets scan runs last, so it reads every log and database the session's suites wrote."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/security/test_secrets.py"))


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[dict[str, str]]:
    """name → URL of each PostgreSQL database the stacks used; kept until the session ends (secrets scan)."""
    databases: dict[str, str] = {}
    yield databases
    for name in databases:
        drop_database(name)


@pytest.fixture(scope="session", params=STACK_BACKENDS)
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    external_fakes: ExternalFakes,
    postgres_databases: dict[str, str],
) -> Iterator[Stack]:
    """The four services, wired together and to the loopback fakes; one database per service."""
    backend = str(request.param)
    urls: dict[str, str] = {}
    if backend == "postgresql":
        reason = postgres_available()
        if reason is not None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        for service in ("generation", "oauth", "pipelines", "scheduler"):
            name, url = create_database()
            postgres_databases[name] = url
            urls[service] = url
    workdir = tmp_path_factory.mktemp(f"stack-{backend}")
    stack = Stack(workdir, database_urls=urls, env=external_fakes.service_env(workdir))
    stack.backend = backend
    try:
        yield stack.start()
    finally:
        stack.stop()
