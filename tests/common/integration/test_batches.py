"""A batch of rows sent as one JSON document (`json_rows` + `rows_json`) arrives in PostgreSQL as it was written."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone

import pytest
from contentpipe.common.batches import json_rows, rows_json
from contentpipe.common.database import create_engine
from sqlalchemy import JSON, Column, DateTime, Float, Integer, MetaData, String, Table, insert, select

pytestmark = pytest.mark.integration


class Colour(enum.IntEnum):
    RED = 1
    BLUE = 2


async def test_a_json_batch_keeps_instants_text_numbers_and_nulls(postgres_url: str) -> None:
    metadata = MetaData()
    table = Table(
        "json_rows_test",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("at", DateTime(timezone=True)),
        Column("label", String(100)),
        Column("colour", Integer),
        Column("ratio", Float),
        Column("extra", JSON),
    )
    columns = {column.name: column.type for column in table.columns}
    kolkata = timezone(timedelta(hours=5, minutes=30))
    rows = [
        # An instant with its own offset and microseconds; text a JSON encoder must escape; a nested document.
        {"id": 1, "at": datetime(2026, 3, 29, 7, 30, 0, 123456, tzinfo=kolkata), "label": 'café "quoted" \\ \n',
         "colour": Colour.BLUE, "ratio": 0.1, "extra": {"k": [1, "two", None]}},
        # JSON null is SQL NULL; a naive datetime is read as UTC (every session's time zone).
        {"id": 2, "at": datetime(2026, 12, 5, 2, 0, 0, 1), "label": None, "colour": None, "ratio": None,
         "extra": None},
    ]  # fmt: skip
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
            await conn.run_sync(metadata.create_all)
            source = json_rows(columns)
            await conn.execute(
                insert(table).from_select(list(columns), select(*(source.c[name] for name in columns))),
                {"rows": rows_json(rows)},
            )
            stored = {row.id: row for row in (await conn.execute(select(table))).all()}
        assert stored[1].at == datetime(2026, 3, 29, 2, 0, 0, 123456, tzinfo=UTC)
        assert stored[1].label == 'café "quoted" \\ \n'
        assert stored[1].colour == 2
        assert stored[1].ratio == 0.1
        assert stored[1].extra == {"k": [1, "two", None]}
        assert stored[2].at == datetime(2026, 12, 5, 2, 0, 0, 1, tzinfo=UTC)
        assert (stored[2].label, stored[2].colour, stored[2].ratio, stored[2].extra) == (None, None, None, None)
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()
