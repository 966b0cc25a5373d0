"""Long polls wake on a notification, not on their re-read interval; they return at their bound otherwise."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest
from contentpipe.common import changes
from contentpipe.common.changes import MAX_WAIT_SECONDS, ChangeNotifier, wait_for, wait_seconds

pytestmark = pytest.mark.unit


class StoredRow:
    """A row a long poll reads: its value, how often it was read, and whether the first read (the subscription
    is in place by then) happened."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.reads = 0
        self.subscribed = asyncio.Event()

    async def read(self) -> str:
        self.reads += 1
        self.subscribed.set()
        return self.value


async def test_a_notification_wakes_the_waiter_long_before_its_recheck() -> None:
    notifier = ChangeNotifier()
    row = StoredRow("QUEUED")

    # recheck and bound of an hour: only the notification can end this wait within the test's timeout.
    waiter = asyncio.create_task(wait_for(notifier, "g1", row.read, lambda v: v == "DONE", 3600, recheck=3600))
    await row.subscribed.wait()
    row.value = "DONE"
    notifier.notify("other")  # another key wakes nobody here
    notifier.notify("g1")
    assert await asyncio.wait_for(waiter, timeout=10) == "DONE"
    assert row.reads == 2
    assert notifier.watched == 0  # the subscription is gone with the waiter


async def test_a_change_between_read_and_wait_is_not_missed() -> None:
    notifier = ChangeNotifier()
    values = iter(["QUEUED", "DONE"])

    async def read() -> str:
        value = next(values)
        notifier.notify("g1")  # the change lands right after the read, before the waiter sleeps
        return value

    assert (
        await asyncio.wait_for(wait_for(notifier, "g1", read, lambda v: v == "DONE", 3600, recheck=3600), 10) == "DONE"
    )


async def test_without_a_change_the_wait_returns_the_last_value_at_its_bound() -> None:
    notifier = ChangeNotifier()

    async def read() -> str:
        return "QUEUED"

    assert await wait_for(notifier, "g1", read, lambda v: v == "DONE", 0.01) == "QUEUED"


def test_the_bound_is_capped() -> None:
    assert wait_seconds(None) == wait_seconds(0) == MAX_WAIT_SECONDS
    assert wait_seconds(5) == 5
    assert wait_seconds(MAX_WAIT_SECONDS * 10) == MAX_WAIT_SECONDS


async def test_snapshots_that_are_not_the_awaited_change_cost_no_read() -> None:
    notifier = ChangeNotifier()
    row = StoredRow("QUEUED")

    waiter = asyncio.create_task(wait_for(notifier, "p1", row.read, lambda v: v == "DONE", 3600, recheck=3600))
    await row.subscribed.wait()
    for step in ("CLAIMED", "PUBLISHING", "ARMED"):
        row.value = step
        notifier.notify("p1", step)
        await asyncio.sleep(0)
    assert not waiter.done()
    assert row.reads == 1  # three changes seen through their snapshots, none read
    row.value = "DONE"
    notifier.notify("p1", "DONE")
    assert await asyncio.wait_for(waiter, timeout=10) == "DONE"
    assert row.reads == 1  # the awaited change is the committed snapshot itself: no read for it either


async def test_a_bare_notification_of_the_awaited_change_is_read() -> None:
    notifier = ChangeNotifier()
    row = StoredRow("QUEUED")

    waiter = asyncio.create_task(wait_for(notifier, "p1", row.read, lambda v: v == "DONE", 3600, recheck=3600))
    await row.subscribed.wait()
    notifier.notify("p1", "RUNNING")
    row.value = "DONE"
    notifier.notify_quietly("p1")  # another replica wrote it: no snapshot, so the row is read
    assert await asyncio.wait_for(waiter, timeout=10) == "DONE"
    assert row.reads == 2


async def test_only_a_local_notify_is_passed_on_to_the_other_replicas() -> None:
    notifier = ChangeNotifier()
    sent: list[str] = []
    notifier.on_notify(sent.append)  # what the cross-replica sender registers
    notifier.notify("g1")  # committed here: passed on
    notifier.notify_quietly("g2")  # another replica's change: passing it back would echo it forever
    notifier.notify_all_quietly()
    assert sent == ["g1"]


async def test_a_wait_re_reads_at_its_notifiers_interval_by_default() -> None:
    notifier = ChangeNotifier(recheck_seconds=0.01)
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        return reads

    # No notification at all: only the notifier's 10 ms re-read can reach the third read within the bound.
    assert await asyncio.wait_for(wait_for(notifier, "g1", read, lambda n: n >= 3, 3600), 10) == 3


def test_a_final_state_written_here_is_known_without_a_read_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass
    class Row:
        state: str

    notifier = ChangeNotifier()
    notifier.notify("g1", Row("RUNNING"))
    assert notifier.final("g1", Row) is None  # not final: it may change again
    notifier.notify("g1", Row("SUCCEEDED"), final=True)
    known = notifier.final("g1", Row)
    assert known == Row("SUCCEEDED")
    assert known is not None
    known.state = "changed by a caller"
    assert notifier.final("g1", Row) == Row("SUCCEEDED")  # callers get copies
    assert notifier.final("g1", str) is None  # another kind of object is not an answer
    later = time.monotonic() + changes.FINAL_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert notifier.final("g1", Row) is None  # it expired: read the row again


async def test_a_wait_that_may_start_from_a_snapshot_takes_one_committed_meanwhile_instead_of_reading() -> None:
    notifier = ChangeNotifier()
    row = StoredRow("QUEUED")
    waiter = asyncio.create_task(
        wait_for(notifier, "g1", row.read, lambda v: v == "DONE", 3600, recheck=3600, visible=lambda v: True)
    )
    while notifier.watched == 0:  # subscribed
        await asyncio.sleep(0)
    notifier.notify("g1", "RUNNING")  # the writer here commits twice
    notifier.notify("g1", "DONE")
    assert await asyncio.wait_for(waiter, timeout=10) == "DONE"
    assert row.reads == 0


async def test_a_snapshot_the_caller_may_not_see_is_no_answer_and_no_snapshot_means_a_read() -> None:
    notifier = ChangeNotifier()
    row = StoredRow("DONE")
    waiter = asyncio.create_task(
        wait_for(notifier, "g1", row.read, lambda v: v.startswith("DONE"), 3600, visible=lambda v: v != "DONE-other")
    )
    while notifier.watched == 0:
        await asyncio.sleep(0)
    notifier.notify("g1", "DONE-other")  # someone else's row under this key: the caller's read decides
    assert await asyncio.wait_for(waiter, timeout=10) == "DONE"
    assert row.reads == 1
    # Nothing notified within the grace: the row is read (a row written elsewhere, or already finished).
    assert await wait_for(notifier, "g2", row.read, lambda v: v == "DONE", 3600, visible=lambda v: True) == "DONE"
    assert row.reads == 2
