"""The run queue on the common work-queue runtime: wake-ups, cancel requests, lost leases, engine crashes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.common.workqueue import QueueSettings
from contentpipe.pipelines.domain.model import Pipeline, PipelineState, RunState
from contentpipe.pipelines.service_layer.engine.core import EngineSettings
from contentpipe.pipelines.service_layer.engine.worker import Worker
from contentpipe.pipelines.service_layer.ports import GenerationStatus
from contentpipe.pipelines.service_layer.runs import RunService

from tests.pipelines.unit.memory import FakePeerServices, MemoryPipelines, MemoryRuns
from tests.pipelines.unit.test_engine import make_run, video

pytestmark = pytest.mark.unit

STUCK = GenerationStatus(name="", state="RUNNING")  # a child that never finishes: the run waits until stopped


def settings(*, lease_seconds: float = 5.0, cancel_check_interval: float = 1.0) -> EngineSettings:
    queue = QueueSettings(owner="w1", lease_seconds=lease_seconds, poll_interval=3600.0, concurrency=200)
    return EngineSettings(queue, poll_initial=0.01, poll_max=0.02, cancel_check_interval=cancel_check_interval)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(worker.run_forever())
    try:
        await asyncio.wait_for(worker.queue.idle.wait(), timeout=5)  # its first claim found nothing
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(condition: object, timeout: float = 5.0) -> float:
    """Seconds until `condition()` holds (fails after `timeout`)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():  # type: ignore[operator]
        assert loop.time() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.005)
    return loop.time() - start


async def test_a_run_queued_here_starts_at_once_not_at_the_next_poll() -> None:
    runs, peers = MemoryRuns(), FakePeerServices()
    worker = Worker(runs, peers.peers(), settings())  # an hour between polls
    async with running(worker):
        await runs.add(make_run(video()))
        worker.wake()  # what RunService's on_queued does
        await until(lambda: runs.rows["r1"].run.state == RunState.SUCCEEDED, timeout=5)


async def test_a_cancel_request_reaches_a_running_run_within_the_check_interval() -> None:
    runs, peers = MemoryRuns(), FakePeerServices(generation_outcomes=[STUCK])
    worker = Worker(runs, peers.peers(), settings(cancel_check_interval=0.1))
    await runs.add(make_run(video()))
    async with running(worker):
        worker.wake()
        await until(lambda: bool(peers.generations))  # the child was created
        await runs.request_cancel("u1", "r1")  # what CancelPipelineRun records (possibly on another replica)
        took = await until(lambda: runs.rows["r1"].run.state == RunState.CANCELED)
    assert took < 1.0
    assert peers.generations[runs.rows["r1"].run.steps[0].children[0]].state == "CANCELED"


async def test_a_lost_lease_stops_the_run_here_without_overwriting_the_new_holder() -> None:
    runs, peers = MemoryRuns(), FakePeerServices(generation_outcomes=[STUCK])
    worker = Worker(runs, peers.peers(), settings(lease_seconds=0.3))  # renewed every 0.1 s
    await runs.add(make_run(video()))
    async with running(worker):
        worker.wake()
        await until(lambda: worker.in_flight == 1 and runs.rows["r1"].run.steps[0].current_child != "")
        # This replica stalled past its lease and another took the run over.
        runs.rows["r1"].lease_expires = datetime.now(UTC) - timedelta(seconds=1)
        (taken,) = await runs.claim("w2", 1, 60)
        await until(lambda: worker.in_flight == 0, timeout=3)
    row = runs.rows["r1"]
    assert row.lease_owner == "w2" and row.run == taken


async def test_the_write_that_ends_a_run_gives_its_lease_back_without_a_release_statement() -> None:
    runs, peers = MemoryRuns(), FakePeerServices()
    await runs.add(make_run(video()))
    assert await Worker(runs, peers.peers(), settings()).drain() == 1
    assert runs.rows["r1"].run.state == RunState.SUCCEEDED
    assert runs.rows["r1"].lease_owner is None
    assert not any("r1" in (ids or []) for ids in runs.released)


async def test_an_engine_crash_fails_the_run_with_engine_error() -> None:
    runs, peers = MemoryRuns(), FakePeerServices()

    async def broken_create(*args: object) -> GenerationStatus:
        raise ZeroDivisionError("a bug in an adapter")

    fake_peers = peers.peers()
    fake_peers.generations.create = broken_create  # type: ignore[method-assign,assignment]
    await runs.add(make_run(video()))
    assert await Worker(runs, fake_peers, settings()).drain() == 1
    run = runs.rows["r1"].run
    assert run.state == RunState.FAILED
    assert run.error is not None and run.error.reason == "ENGINE_ERROR"
    assert runs.rows["r1"].lease_owner is None  # given back


async def test_a_run_created_here_with_room_starts_leased_without_a_wake_up_or_claim() -> None:
    pipelines, runs, peers = MemoryPipelines(), MemoryRuns(), FakePeerServices()
    now = datetime.now(UTC)
    await pipelines.add(Pipeline("p1", "u1", "P", "", PipelineState.ACTIVE, (video(),), 1, now, now), "")
    engine_settings = replace(settings(), max_per_user=1)
    worker = Worker(runs, peers.peers(), engine_settings)  # an hour between polls
    woken: list[str] = []
    service = RunService(
        pipelines, runs, peers.peers(), engine_settings, on_queued=lambda: woken.append("wake"), dispatch=worker
    )
    peers.generation_outcomes = [STUCK]
    async with running(worker):
        first = await service.run("u1", "p1", "first")
        # Leased to this replica by the insert itself, and running before any claim could have taken it.
        assert runs.rows[first.id].lease_owner == "w1"
        await until(lambda: runs.rows[first.id].run.state == RunState.RUNNING)
        assert woken == []
        again = await service.run("u1", "p1", "first")  # a repeated request id: the earlier run, nothing started
        assert again.id == first.id and worker.in_flight == 1
        # Its user is at max_per_user here: the next run waits in the queue, unleased, and wakes the queue instead.
        second = await service.run("u1", "p1", "second")
        assert runs.rows[second.id].lease_owner is None and woken == ["wake"]
