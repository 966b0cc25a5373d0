"""One oauth service per test module and database (faked platforms, real OIDC provider), and a stub for it.

A module may set `STACK_ENV = {...}` for extra service variables."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.oauth.connections.support import Stack, start_stack
from tests.support.postgres import fresh_database


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Each module gets its own database: the refreshers must only meet this module's connections."""
    tmp = tmp_path_factory.mktemp(f"{request.module.__name__.rsplit('.', 1)[-1]}-{request.param}")
    extra = getattr(request.module, "STACK_ENV", None)
    if request.param == "sqlite":
        yield from start_stack(tmp, f"sqlite+aiosqlite:///{tmp / 'oauth.db'}", extra)
        return
    request.getfixturevalue("postgres_url")  # skipped locally / failed under CI when PostgreSQL is down
    with fresh_database() as url:
        yield from start_stack(tmp, url, extra)


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[Any]:
    channel, stub = stack.stub()
    yield stub
    await channel.close(None)
