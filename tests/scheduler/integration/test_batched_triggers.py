"""New runs are queued per owner in BatchRunPipelines calls (SQLite and PostgreSQL, against the fake pipelines
service): each request answers for itself, a lone run goes as RunPipeline, and a pipelines service without the
batch call gets single calls."""

from __future__ import annotations

import logging

import pytest
from contentpipe.scheduler.domain.model import Job, JobRunState, JobState, StateReasonCode
from contentpipe.scheduler.domain.policies import run_request_id
from contentpipe.scheduler.service_layer.jobs import JobInput

from tests.scheduler.conftest import Harness

pytestmark = pytest.mark.integration
ALICE, BOB = "user-alice", "user-bob"


async def _jobs(h: Harness, owner: str, pipeline: str, count: int) -> list[Job]:
    return [
        await h.components.jobs.create_job(owner, JobInput(pipeline=pipeline, cron_expression="*/5 * * * *"))
        for _ in range(count)
    ]


async def _make_due(h: Harness, jobs: list[Job]) -> str:
    due = (await h.now()).replace(second=0, microsecond=0)
    for job in jobs:
        await h.set_next_fire(job.id, due)
    return due.isoformat()


async def test_an_owners_runs_go_in_one_batch_each_request_answering_for_itself(harness: Harness) -> None:
    h = harness
    h.fake.add_pipeline("pipelines/a1", ALICE)
    h.fake.add_pipeline("pipelines/a2", ALICE)
    h.fake.add_pipeline("pipelines/a3", ALICE)
    h.fake.add_pipeline("pipelines/b1", BOB)
    good = await _jobs(h, ALICE, "pipelines/a1", 5)
    [paused] = await _jobs(h, ALICE, "pipelines/a2", 1)
    [deleted] = await _jobs(h, ALICE, "pipelines/a3", 1)
    [lone] = await _jobs(h, BOB, "pipelines/b1", 1)
    h.fake.add_pipeline("pipelines/a2", ALICE, paused=True)
    with h.fake.lock:
        del h.fake.state.pipelines["pipelines/a3"]
    jobs = [*good, paused, deleted, lone]
    await _make_due(h, jobs)

    result = await h.components.processor.process(100)

    # Alice's seven runs in one call, Bob's lone run as RunPipeline.
    assert h.fake.state.batch_sizes == [7]
    assert len(h.fake.state.call_request_ids) == 1
    assert result.claimed == 8
    assert result.triggered == 6
    for job in [*good, lone]:
        [run] = await h.components.store.list_runs(job.id, state=None, after=None, limit=10)
        assert run.state is JobRunState.TRIGGERED and run.pipeline_run, run
        assert h.fake.state.run_calls[run_request_id(job.id, run.nominal_time, 1)] == 1
    stored = await h.components.store.get_job(paused.id)
    assert stored is not None and stored.state is JobState.PAUSED
    assert stored.state_reason_code == StateReasonCode.PIPELINE_PAUSED
    [missed] = await h.components.store.list_runs(paused.id, state=None, after=None, limit=10)
    assert missed.state is JobRunState.MISSED
    gone = await h.components.store.get_job(deleted.id)
    assert gone is not None and gone.state is JobState.PAUSED
    assert gone.state_reason_code == StateReasonCode.PIPELINE_DELETED
    # Nothing is sent twice on the next pass.
    again = await h.components.processor.process(100)
    assert again.claimed == 0
    assert sum(h.fake.state.run_calls.values()) == 6


async def test_without_the_batch_call_runs_go_one_by_one_and_the_fallback_is_logged_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    h.fake.add_pipeline("pipelines/a1", ALICE)
    h.fake.state.batch_supported = False
    jobs = await _jobs(h, ALICE, "pipelines/a1", 4)
    await _make_due(h, jobs)

    with caplog.at_level(logging.WARNING, logger="contentpipe.scheduler.service_layer.processing"):
        first = await h.components.processor.process(100)
        # The next pass does not ask again: its runs go one by one at once.
        more = await _jobs(h, ALICE, "pipelines/a1", 3)
        await _make_due(h, more)
        h.fake.state.batch_supported = True
        second = await h.components.processor.process(100)

    assert (first.triggered, second.triggered) == (4, 3)
    assert h.fake.state.batch_sizes == []
    assert len(h.fake.state.call_request_ids) == 7
    assert sorted(h.fake.state.run_calls.values()) == [1] * 7
    assert [r.message for r in caplog.records if "BatchRunPipelines" in r.message] != []
    assert sum("BatchRunPipelines" in r.message for r in caplog.records) == 1


async def test_a_batch_call_that_fails_leaves_its_runs_to_be_sent_again_with_the_same_request_ids(
    harness: Harness,
) -> None:
    h = harness
    h.fake.add_pipeline("pipelines/a1", ALICE)
    jobs = await _jobs(h, ALICE, "pipelines/a1", 3)
    await _make_due(h, jobs)
    h.fake.state.unavailable = True

    failed = await h.components.processor.process(100)

    assert (failed.triggered, failed.errors, failed.unreachable) == (0, 3, True)
    for job in jobs:
        [run] = await h.components.store.list_runs(job.id, state=None, after=None, limit=10)
        assert run.state is JobRunState.TRIGGERED and not run.pipeline_run
    h.fake.state.unavailable = False
    await h.check_runs_now()

    resent = await h.components.processor.process(100)

    assert resent.triggered == 3
    for job in jobs:
        [run] = await h.components.store.list_runs(job.id, state=None, after=None, limit=10)
        assert run.pipeline_run
        assert h.fake.state.run_calls[run_request_id(job.id, run.nominal_time, 1)] == 1
