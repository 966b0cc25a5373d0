"""The database pool follows the service's worker concurrency (capped), unless its settings override it."""

from __future__ import annotations

import pytest
from contentpipe.common.database import (
    POOL_CONCURRENCY_CAP,
    RPC_HANDLER_CONNECTIONS,
    create_service_engine,
    pool_size_for,
)
from contentpipe.common.settings import ConfigError, load_common_settings

pytestmark = pytest.mark.unit
BASE = {"CONTENTPIPE_JWT_SECRET": "x" * 32, "PIPELINES_DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}


def test_one_connection_per_concurrent_worker_plus_the_rpc_handlers_and_a_small_overflow() -> None:
    assert pool_size_for(8) == pool_size_for(8, size=None, max_overflow=None)
    assert pool_size_for(8).size == 8 + RPC_HANDLER_CONNECTIONS
    assert pool_size_for(0).size == RPC_HANDLER_CONNECTIONS  # an API-only process
    assert pool_size_for(1000).size == POOL_CONCURRENCY_CAP + RPC_HANDLER_CONNECTIONS
    assert pool_size_for(8).max_overflow == 4


def test_explicit_settings_override_the_sizing() -> None:
    sized = pool_size_for(200, size=60, max_overflow=0)
    assert (sized.size, sized.max_overflow) == (60, 0)


async def test_a_service_engine_gets_the_sized_pool_or_the_configured_one() -> None:
    default = create_service_engine(load_common_settings("pipelines", BASE), concurrency=8)
    configured = create_service_engine(
        load_common_settings(
            "pipelines", {**BASE, "PIPELINES_DATABASE_POOL_SIZE": "40", "PIPELINES_DATABASE_MAX_OVERFLOW": "0"}
        ),
        concurrency=8,
    )
    try:
        assert (default.pool.size(), default.pool._max_overflow) == (12, 4)  # type: ignore[attr-defined]
        assert (configured.pool.size(), configured.pool._max_overflow) == (40, 0)  # type: ignore[attr-defined]
    finally:
        await default.dispose()
        await configured.dispose()


def test_a_bad_pool_setting_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PIPELINES_DATABASE_POOL_SIZE"):
        load_common_settings("pipelines", {**BASE, "PIPELINES_DATABASE_POOL_SIZE": "0"})
    with pytest.raises(ConfigError, match="SCHEDULER_DATABASE_MAX_OVERFLOW"):
        load_common_settings("scheduler", {**BASE, "SCHEDULER_DATABASE_MAX_OVERFLOW": "many"})
