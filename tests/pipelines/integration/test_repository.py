"""Run storage on SQLite and PostgreSQL: exclusive claims, lease expiry, fenced saves, request-id idempotency."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from contentpipe.common.database import create_engine, run_migrations
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.ids import new_id
from contentpipe.pipelines.adapters.repository import SqlRunRepository
from contentpipe.pipelines.bootstrap import MIGRATIONS, VERSION_TABLE
from contentpipe.pipelines.domain.model import (
    GenerateContent,
    GenerationKind,
    PipelineRun,
    RunState,
    RunTrigger,
    Step,
    StepError,
    StepRun,
    StepState,
    TriggerKind,
)
from contentpipe.pipelines.service_layer.ports import LeaseLost, RunFilter
from sqlalchemy import event

pytestmark = pytest.mark.integration


def make_run(owner: str, request_id: str = "") -> PipelineRun:
    step = Step("video", GenerateContent(kind=GenerationKind.VIDEO, prompt="x", options={"fps": 24}))
    return PipelineRun(
        id=new_id(),
        pipeline_id="p" + uuid.uuid4().hex[:8],
        owner=owner,
        pipeline_revision=3,
        pipeline_display_name="P",
        state=RunState.QUEUED,
        trigger=RunTrigger(kind=TriggerKind.MANUAL, trigger_time=datetime.now(UTC)),
        definition=(step,),
        steps=(StepRun(step_id="video"),),
        create_time=datetime.now(UTC),
        request_id=request_id,
        trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    )


async def test_claims_are_exclusive_leases_expire_and_saves_are_fenced(own_database_url: str) -> None:
    await run_migrations(own_database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(own_database_url)
    repo = SqlRunRepository(engine)
    owner = f"u-{uuid.uuid4().hex[:6]}"
    try:
        runs = [await repo.add(make_run(owner)) for _ in range(6)]

        first, second = await asyncio.gather(repo.claim("w1", 4, 60), repo.claim("w2", 4, 60))
        claimed = [r.id for r in first] + [r.id for r in second]
        assert sorted(claimed) == sorted(r.id for r in runs)  # every run once, none twice

        run = first[0]
        assert run.definition[0].action == GenerateContent(kind=GenerationKind.VIDEO, prompt="x", options={"fps": 24})
        assert run.trace_context["traceparent"].startswith("00-0af7")
        progressed = run.with_step(0, StepRun(step_id="video", state=StepState.RUNNING, attempts=1))
        await repo.save(replace(progressed, state=RunState.RUNNING), "w1")
        with pytest.raises(LeaseLost):
            await repo.save(progressed, "w2")

        # w1 dies: after its lease expires, w3 takes the run over from its last recorded step.
        await repo.renew([run.id], "w1", 0.2)
        assert await repo.renew([run.id], "w2", 60) == set()
        await asyncio.sleep(0.4)
        taken = await repo.claim("w3", 10, 60)
        assert [r.id for r in taken] == [run.id]
        assert taken[0].state == RunState.RUNNING and taken[0].steps[0].attempts == 1
        with pytest.raises(LeaseLost):
            await repo.save(progressed, "w1")
        # The write that ends the run gives its lease back: nothing left for w3 to renew or release.
        await repo.save(replace(taken[0], state=RunState.SUCCEEDED, finish_time=datetime.now(UTC)), "w3")
        assert await repo.renew([run.id], "w3", 60) == set()

        await repo.release([r.id for r in second], "w2")
        assert {r.id for r in await repo.claim("w4", 10, 60, exclude_owners=[owner])} == set()
        assert len(await repo.claim("w4", 10, 60)) == len(second)
    finally:
        await engine.dispose()


async def test_concurrent_saves_are_one_statement_each_row_fenced_by_its_lease(own_database_url: str) -> None:
    await run_migrations(own_database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(own_database_url)
    repo = SqlRunRepository(engine)
    owner = f"u-{uuid.uuid4().hex[:6]}"
    try:
        for _ in range(6):
            await repo.add(make_run(owner))
        claimed = await repo.claim("w1", 6, 60)
        assert len(claimed) == 6
        now = datetime.now(UTC)
        error = StepError(ErrorClass.PERMANENT, "TEMPLATE_ERROR", "step 'video': no such field")
        running = [
            replace(
                r.with_step(0, StepRun(step_id="video", state=StepState.RUNNING, attempts=2, current_child="g")),
                state=RunState.RUNNING,
                start_time=now,
            )
            for r in claimed
        ]
        succeeded = replace(running[0], state=RunState.SUCCEEDED, finish_time=now)
        failed = replace(running[1], state=RunState.FAILED, error=error, finish_time=now)
        updates: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if statement.lstrip().upper().startswith("UPDATE"):
                updates.append(statement)

        event.listen(engine.sync_engine, "before_cursor_execute", count)
        outcomes = await asyncio.gather(
            repo.save(succeeded, "w1"),
            repo.save(failed, "w1"),
            repo.save(running[2], "w2"),  # not the lease holder: written by nobody
            *(repo.save(run, "w1") for run in running[3:]),
            return_exceptions=True,
        )
        event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert [type(o).__name__ for o in outcomes] == [
            "NoneType",
            "NoneType",
            "LeaseLost",
            "NoneType",
            "NoneType",
            "NoneType",
        ]
        # Saved together: one statement on PostgreSQL; SQLite writes each row in one shared transaction.
        assert len(updates) == (6 if own_database_url.startswith("sqlite") else 1)

        stored = {r.id: await repo.get(owner, None, r.id) for r in claimed}
        assert stored[succeeded.id] == succeeded
        assert stored[failed.id] == failed and stored[failed.id].error == error  # type: ignore[union-attr]
        assert stored[running[2].id] == claimed[2]  # unchanged
        assert [stored[r.id] for r in running[3:]] == running[3:]
        # The runs that ended gave their leases back in the same write; the running ones are still held.
        assert await repo.renew([r.id for r in claimed], "w1", 60) == {r.id for r in claimed[2:]}
    finally:
        await engine.dispose()


async def test_request_id_is_idempotent_per_owner_and_history_filters(own_database_url: str) -> None:
    await run_migrations(own_database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(own_database_url)
    repo = SqlRunRepository(engine)
    try:
        original = await repo.add(make_run("alice", "job-1@2026-03-29T09:00Z"))
        again = await repo.add(make_run("alice", "job-1@2026-03-29T09:00Z"))
        other = await repo.add(make_run("bob", "job-1@2026-03-29T09:00Z"))
        assert again.id == original.id and other.id != original.id

        page = await repo.list_page(RunFilter(owner="alice"), 10, None)
        assert [r.id for r in page.items] == [original.id]
        assert (await repo.list_page(RunFilter(owner="alice", state=RunState.FAILED), 10, None)).items == []
    finally:
        await engine.dispose()


async def test_queue_stats_count_queued_runs_and_the_oldest_create_time(own_database_url: str) -> None:
    await run_migrations(own_database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(own_database_url)
    repo = SqlRunRepository(engine)
    try:
        before, _ = await repo.queue_stats()
        owner = f"u-{uuid.uuid4().hex[:6]}"
        oldest = replace(make_run(owner), create_time=datetime(2020, 1, 1, tzinfo=UTC))
        await repo.add(oldest)
        await repo.add(make_run(owner))
        depth, first = await repo.queue_stats()
        assert depth == before + 2
        assert first == datetime(2020, 1, 1, tzinfo=UTC)
    finally:
        await engine.dispose()
