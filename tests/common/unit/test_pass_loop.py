"""PassLoop: passes run back to back while there is more, a wake-up runs one at once, a bug crashes the loop."""

from __future__ import annotations

import asyncio

import pytest
from contentpipe.common.errors import Unavailable
from contentpipe.common.workqueue import PassLoop

pytestmark = pytest.mark.unit


async def test_full_passes_run_back_to_back_and_a_wake_up_runs_the_next_one() -> None:
    backlog = [True, True, False]
    passes = 0
    idle_after_backlog = asyncio.Event()
    second_round = asyncio.Event()

    async def run_pass() -> bool:
        nonlocal passes
        passes += 1
        if passes == 3:
            idle_after_backlog.set()
        if passes == 4:
            second_round.set()
        return backlog.pop(0) if backlog else False

    loop = PassLoop("test", run_pass, interval=3600, max_passes_in_a_row=None)
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(idle_after_backlog.wait(), timeout=10)
        loop.wake.set()  # an hour-long interval: only the wake-up can start pass 4
        await asyncio.wait_for(second_round.wait(), timeout=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert passes == 4


async def test_a_transient_failure_is_retried_and_a_bug_ends_the_loop() -> None:
    calls = 0
    failed_once = asyncio.Event()

    async def run_pass() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            failed_once.set()
            raise Unavailable("database restarting")
        raise TypeError("a bug in the pass")

    loop = PassLoop("test", run_pass, interval=3600)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(failed_once.wait(), timeout=10)
    loop.wake.set()
    with pytest.raises(TypeError):
        await asyncio.wait_for(task, timeout=10)
    assert calls == 2


async def test_a_saturated_leased_worker_sleeps_instead_of_claiming_in_a_loop() -> None:
    from collections.abc import Collection, Sequence

    from contentpipe.common.workqueue import LeasedWorker, QueueSettings

    claims = 0
    started = asyncio.Event()
    release = asyncio.Event()

    class EndlessQueue:
        async def claim(self, owner: str, limit: int, lease_seconds: float) -> Sequence[str]:
            nonlocal claims
            claims += 1
            return [f"item-{claims}-{i}" for i in range(limit)]

        async def renew(self, owner: str, ids: Sequence[str], lease_seconds: float) -> Collection[str]:
            return set(ids)

        async def release(self, owner: str, ids: Sequence[str] | None = None) -> None:
            return None

    async def handle(item: str) -> None:
        started.set()
        await release.wait()

    worker = LeasedWorker(
        "test", EndlessQueue(), handle, QueueSettings(owner="w", concurrency=2, poll_interval=3600), key=str
    )
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(started.wait(), timeout=10)
        for _ in range(200):  # plenty of turns of the event loop for a spinning claim loop
            await asyncio.sleep(0)
        assert worker.in_flight == 2
        assert claims == 1
        assert worker.idle.is_set()  # asleep until a handler finishes, not spinning on a full worker
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
