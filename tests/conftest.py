"""Fixtures for every suite: databases (SQLite and PostgreSQL), service processes, tokens."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import TEST_JWT_SECRET, ServiceProcess
from tests.support.postgres import fresh_database, postgres_available

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return TEST_JWT_SECRET


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh database for this session; skipped locally, failed under CI=true, if unreachable."""
    reason = postgres_available()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with fresh_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(database_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """An async SQLAlchemy URL: a SQLite file in tmp, or the session's PostgreSQL database."""
    if database_backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """`start_service("scheduler", database_url=..., env={...})` → a SERVING ServiceProcess, stopped after."""
    started: list[ServiceProcess] = []

    def start(service: str, **kwargs: object) -> ServiceProcess:
        proc = ServiceProcess(service, tmp_path / service, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        return proc.start()

    yield start
    for proc in reversed(started):
        proc.terminate()
