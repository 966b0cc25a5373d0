"""Fixtures of the pipelines suites."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import fresh_database, postgres_available


@pytest.fixture
def own_database_url(database_backend: str, tmp_path: Path) -> Iterator[str]:
    """A database nobody else uses (a fresh PostgreSQL database per test): for tests that drain every run."""
    if database_backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
        return
    reason = postgres_available()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with fresh_database() as url:
        yield url
