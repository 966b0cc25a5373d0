"""A fresh PostgreSQL database per test session on 127.0.0.1:5432 (user postgres, trust auth)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

ADMIN_DSN = os.environ.get("CONTENTPIPE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> str | None:
    """None when reachable, else the reason."""
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable at {ADMIN_DSN}: {exc}"


def create_database() -> tuple[str, str]:
    """Create `contentpipe_test_<random>`; returns (name, SQLAlchemy async URL)."""
    name = f"contentpipe_test_{secrets.token_hex(6)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return name, f"{base}/{name}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database (see `create_database`) for the block, dropped after it whatever happened."""
    name, url = create_database()
    try:
        yield url
    finally:
        drop_database(name)


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
