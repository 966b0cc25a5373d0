"""LeasedWorker's optional hooks: a claim that sees what this replica holds, and a watch over the held ids."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import pytest
from contentpipe.common import errors
from contentpipe.common.workqueue import LEASE_RETURNED, Handled, LeasedWorker, QueueSettings

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Job:
    id: str
    user: str


class JobQueue:
    """Jobs in claim order; a claimed job stays leased until released, a finished one is done."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self.order = list(jobs)
        self.waiting = {job.id for job in jobs}
        self.leased: set[str] = set()
        self.done: set[str] = set()

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> Sequence[Job]:
        return self.claim_where(limit, skip_users=set())

    def claim_where(self, limit: int, skip_users: set[str]) -> list[Job]:
        taken = [job for job in self.order if job.id in self.waiting and job.user not in skip_users][:limit]
        for job in taken:
            self.waiting.discard(job.id)
            self.leased.add(job.id)
        return taken

    async def renew(self, owner: str, ids: Sequence[str], lease_seconds: float) -> Collection[str]:
        return {i for i in ids if i in self.leased}

    async def release(self, owner: str, ids: Sequence[str] | None = None) -> None:
        for job_id in list(self.leased) if ids is None else ids:
            self.leased.discard(job_id)
            if job_id not in self.done:
                self.waiting.add(job_id)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_held_aware_claim_sees_the_running_items_and_keeps_one_user_from_taking_every_slot() -> None:
    jobs = [Job(f"a{i}", "greedy") for i in range(6)] + [Job("b0", "modest")]
    queue = JobQueue(jobs)
    seen: list[list[str]] = []
    gates = {job.id: asyncio.Event() for job in jobs}

    async def fair_claim(owner: str, limit: int, lease_seconds: float, held: Sequence[Job]) -> Sequence[Job]:
        """At most two jobs of a user here: users at the limit are skipped, a batch's surplus is given back."""
        seen.append(sorted(job.id for job in held))
        counts = Counter(job.user for job in held)
        kept = []
        for job in queue.claim_where(limit, {user for user, count in counts.items() if count >= 2}):
            if counts[job.user] >= 2:
                await queue.release(owner, [job.id])
                continue
            counts[job.user] += 1
            kept.append(job)
        return kept

    async def handle(job: Job) -> None:
        await gates[job.id].wait()
        queue.done.add(job.id)

    worker = LeasedWorker(
        "jobs", queue, handle, QueueSettings(owner="w", concurrency=4, poll_interval=0.01), key=lambda j: j.id,
        claim=fair_claim,
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    try:
        while sorted(worker.running()) != ["a0", "a1", "b0"]:
            assert not task.done()
            await asyncio.sleep(0.01)
        assert ["a0", "a1"] in seen  # the claim after the first batch was told what runs here
        gates["a0"].set()
        while "a2" not in worker.running():
            await asyncio.sleep(0.01)
        assert sorted(worker.running()) == ["a1", "a2", "b0"]  # a finished item is no longer reported as held
        assert any(held == ["a1", "b0"] for held in seen)
    finally:
        await _stop(task)


async def test_the_watch_sees_the_held_ids_every_interval_and_survives_a_transient_failure() -> None:
    queue = JobQueue([Job("j1", "u"), Job("j2", "u")])
    calls: list[list[str]] = []
    watched_twice = asyncio.Event()

    async def watch(ids: Sequence[str]) -> None:
        calls.append(sorted(ids))
        if len(calls) == 1:
            raise errors.Unavailable("database restarting")
        if len(calls) >= 3:
            watched_twice.set()

    async def handle(job: Job) -> None:
        await asyncio.Event().wait()

    worker = LeasedWorker(
        "jobs", queue, handle, QueueSettings(owner="w", poll_interval=3600), key=lambda j: j.id,
        watch=watch, watch_interval=0.02,
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(watched_twice.wait(), timeout=5)
        assert calls[-1] == ["j1", "j2"]
        assert not task.done()
    finally:
        await _stop(task)


async def test_a_watch_with_a_bug_kills_the_loop_so_supervision_sees_it() -> None:
    queue = JobQueue([Job("j1", "u")])

    async def watch(ids: Sequence[str]) -> None:
        raise TypeError("a bug in the watch")

    async def handle(job: Job) -> None:
        await asyncio.Event().wait()

    worker = LeasedWorker(
        "jobs", queue, handle, QueueSettings(owner="w", poll_interval=0.05), key=lambda j: j.id,
        watch=watch, watch_interval=0.02,
    )  # fmt: skip
    with pytest.raises(TypeError, match="a bug in the watch"):
        await asyncio.wait_for(worker.run(), timeout=5)
    assert queue.leased == set()  # the loop gave its leases back on the way out


async def test_a_handler_whose_last_write_returned_the_lease_gets_no_release() -> None:
    queue = JobQueue([Job("ended", "u"), Job("kept", "u")])
    released: list[str] = []
    real_release = queue.release

    async def release(owner: str, ids: Sequence[str] | None = None) -> None:
        released.extend(ids or [])
        await real_release(owner, ids)

    queue.release = release  # type: ignore[method-assign]

    async def handle(job: Job) -> Handled | None:
        queue.done.add(job.id)
        if job.id == "ended":
            queue.leased.discard(job.id)  # as a final save that clears the lease columns
            return LEASE_RETURNED
        return None  # the worker gives the lease back

    worker = LeasedWorker("jobs", queue, handle, QueueSettings(owner="w", poll_interval=3600.0), key=lambda j: j.id)
    assert await worker.drain() == 2
    assert released == ["kept"]
