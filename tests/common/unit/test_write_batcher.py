"""WriteBatcher: concurrent callers' writes in one flush, a lone write at once, a bad item failing only itself; a fenced
save names exactly the columns it writes."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from contentpipe.common.batches import WriteBatcher, fenced_saves


class Store:
    """Records each batch written; `refuse` names items whose batch fails (as a constraint violation would)."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.batches: list[list[str]] = []
        self.refuse = refuse
        self.gate: asyncio.Event | None = None

    async def write(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse.intersection(items):
            raise ValueError(f"refused {sorted(self.refuse.intersection(items))}")
        return [item.upper() for item in items]


async def test_a_lone_write_is_flushed_at_once_and_concurrent_ones_together() -> None:
    store = Store()
    batcher = WriteBatcher(store.write, name="test")
    assert await batcher.submit("a") == "A"
    assert store.batches == [["a"]]

    results = await asyncio.gather(*(batcher.submit(item) for item in "bcd"))
    assert results == ["B", "C", "D"]
    assert store.batches[1:] == [["b", "c", "d"]]


async def test_writes_arriving_during_a_flush_form_the_next_batch() -> None:
    store = Store()
    store.gate = asyncio.Event()
    batcher = WriteBatcher(store.write, name="test", max_batch=2)
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.batches == [["a"]]  # in flight
    later = [asyncio.create_task(batcher.submit(item)) for item in "bcd"]
    await asyncio.sleep(0)
    store.gate.set()
    assert await first == "A"
    assert [await task for task in later] == ["B", "C", "D"]
    assert store.batches == [["a"], ["b", "c"], ["d"]]  # at most max_batch at a time


async def test_a_failing_batch_is_written_item_by_item_so_only_the_bad_item_fails() -> None:
    store = Store(refuse=frozenset({"bad"}))
    batcher = WriteBatcher(store.write, name="test")
    outcomes = await asyncio.gather(*(batcher.submit(item) for item in ("x", "bad", "y")), return_exceptions=True)
    assert outcomes[0] == "X" and outcomes[2] == "Y"
    assert isinstance(outcomes[1], ValueError)
    assert store.batches == [["x", "bad", "y"], ["x"], ["bad"], ["y"]]


async def test_a_cancelled_caller_does_not_cancel_the_write_of_its_batch() -> None:
    store = Store()
    store.gate = asyncio.Event()
    batcher = WriteBatcher(store.write, name="test")
    cancelled = asyncio.create_task(batcher.submit("a"))
    kept = asyncio.create_task(batcher.submit("b"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    store.gate.set()
    assert await kept == "B"
    assert store.batches == [["a", "b"]]


async def test_callers_waiting_on_a_flush_that_is_cancelled_are_released() -> None:
    store = Store()
    store.gate = asyncio.Event()
    batcher = WriteBatcher(store.write, name="test")
    waiting = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert batcher._flusher is not None
    batcher._flusher.cancel()  # the process stops
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 1)


def test_a_fenced_save_must_name_exactly_the_columns_it_writes() -> None:
    # In the batched UPDATE a column left out of a row would be written as NULL, and a key the statement does not
    # list would not be written at all: both are refused when the row is made.
    table = sa.Table(
        "items",
        sa.MetaData(),
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("state", sa.String),
        sa.Column("note", sa.String),
        sa.Column("lease_owner", sa.String),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    )
    saves = fenced_saves(table, ("state", "note"))
    row = saves.row("i1", "w1", {"state": "DONE", "note": ""}, release=True)
    assert row == {"b_id": "i1", "b_owner": "w1", "b_release": True, "state": "DONE", "note": ""}
    with pytest.raises(ValueError, match="items"):
        saves.row("i1", "w1", {"state": "DONE"}, release=True)
    with pytest.raises(ValueError, match="items"):
        saves.row("i1", "w1", {"state": "DONE", "note": "", "extra": 1}, release=False)
