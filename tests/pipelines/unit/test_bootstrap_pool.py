"""The pipelines process sizes its database pool to the runs it executes at once."""

from __future__ import annotations

import pytest
from contentpipe.pipelines.bootstrap import build
from contentpipe.pipelines.config import load_config

pytestmark = pytest.mark.unit
ENV = {"CONTENTPIPE_JWT_SECRET": "x" * 32, "PIPELINES_DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}


@pytest.mark.parametrize(
    ("env", "size", "overflow"),
    [
        ({"PIPELINES_MAX_RUNS_IN_FLIGHT": "8"}, 8 + 4, 4),
        ({}, 16 + 4, 4),  # 200 runs in flight: capped, they queue for a connection between short transactions
        ({"PIPELINES_DATABASE_POOL_SIZE": "64", "PIPELINES_DATABASE_MAX_OVERFLOW": "8"}, 64, 8),
    ],
)
async def test_the_pool_follows_max_runs_in_flight_unless_configured(
    env: dict[str, str], size: int, overflow: int
) -> None:
    components = build(load_config({**ENV, **env}))
    try:
        pool = components.engine.pool
        assert (pool.size(), pool._max_overflow) == (size, overflow)  # type: ignore[attr-defined]
    finally:
        await components.close()
