"""The generation repository on SQLite and PostgreSQL: idempotent creates answer with the stored generation, and
say whether they inserted it; a caller-chosen id that is taken is refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from contentpipe.common.database import create_engine, run_migrations
from contentpipe.common.ids import new_id
from contentpipe.common.workqueue import Lease
from contentpipe.generation.adapters.repository import SqlGenerationRepository, generations
from contentpipe.generation.bootstrap import MIGRATIONS, VERSION_TABLE
from contentpipe.generation.domain.model import Generation, GenerationError, GenerationKind, GenerationOptions
from contentpipe.generation.service_layer.ports import GenerationIdTaken

from tests.generation.unit.test_worker import RecordingDispatch, create_services, text_request

pytestmark = pytest.mark.integration


def generation(owner: str, request_id: str, generation_id: str = "") -> Generation:
    now = datetime.now(UTC)
    return Generation(
        id=generation_id or new_id(),
        owner=owner,
        kind=GenerationKind.TEXT,
        prompt="hello",
        options=GenerationOptions(),
        provider="local",
        model="echo",
        create_time=now,
        deadline_time=now + timedelta(hours=1),
        request_id=request_id,
    )


async def test_a_replayed_request_id_answers_with_the_stored_generation_not_a_new_unsaved_one(
    database_url: str,
) -> None:
    # The replay a caller makes after a lost reply: psycopg's rowcount for INSERT … ON CONFLICT DO NOTHING is -1,
    # which once made the service answer with a new generation that was never stored.
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        repository = SqlGenerationRepository(engine)
        first = (await repository.add(generation("u1", "run-r-s0-a1"))).generation
        replay = await repository.add(generation("u1", "run-r-s0-a1"))
        other_user = (await repository.add(generation("u2", "run-r-s0-a1"))).generation

        assert replay.generation.id == first.id and not replay.created
        assert other_user.id != first.id
        assert await repository.get(other_user.id) is not None
        assert await repository.get(first.id) is not None
    finally:
        await engine.dispose()


async def test_a_prediction_is_held_by_one_generation_and_a_final_delivery_is_never_replaced(
    database_url: str,
) -> None:
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        repository = SqlGenerationRepository(engine)
        prediction = new_id()
        assert await repository.hold_prediction("replicate", prediction, "gen-a")
        assert await repository.hold_prediction("replicate", prediction, "gen-a")  # idempotent for the holder
        assert not await repository.hold_prediction("replicate", prediction, "gen-b")
        assert await repository.hold_prediction("cog", prediction, "gen-b")  # another provider's id space

        assert await repository.delivery("cog", prediction) is None
        await repository.save_delivery("cog", prediction, {"id": prediction, "status": "processing"})
        assert await repository.delivery("cog", prediction) == {"id": prediction, "status": "processing"}
        done = {"id": prediction, "status": "succeeded", "output": "file:///x.mp4"}
        await repository.save_delivery("cog", prediction, done)
        await repository.save_delivery("cog", prediction, {"id": prediction, "status": "processing"})  # late, stale
        assert await repository.delivery("cog", prediction) == done
    finally:
        await engine.dispose()


async def test_a_generation_inserted_under_a_lease_is_held_by_its_owner_from_the_insert(database_url: str) -> None:
    # What a replica does for a generation it creates and runs at once: nobody else may claim it meanwhile.
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        repository = SqlGenerationRepository(engine)
        leased = (await repository.add(generation("u1", f"leased-{new_id()}"), Lease("replica-a", 600))).generation
        assert leased.id not in {g.id for g in await repository.claim("replica-b", 100, 30)}
        assert await repository.renew("replica-a", [leased.id], 600) == {leased.id}
        await repository.release("replica-a", [leased.id])
        assert leased.id in {g.id for g in await repository.claim("replica-b", 100, 30)}
    finally:
        await engine.dispose()


async def test_the_save_that_ends_a_generation_gives_its_lease_back(database_url: str) -> None:
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        repository = SqlGenerationRepository(engine)
        running = (await repository.add(generation("u1", f"ends-{new_id()}"), Lease("replica-a", 600))).generation
        running.start(datetime.now(UTC))
        assert await repository.leased_by("replica-a").save(running)
        running.succeed(datetime.now(UTC), [], text="done")
        assert await repository.leased_by("replica-a").save(running)
        async with engine.connect() as connection:
            lease = (
                await connection.execute(
                    sa.select(generations.c.lease_owner, generations.c.lease_expires_at).where(
                        generations.c.id == running.id
                    )
                )
            ).one()
        assert tuple(lease) == (None, None)
    finally:
        await engine.dispose()


async def test_a_workers_concurrent_saves_are_one_statement_each_fenced_by_its_lease(database_url: str) -> None:
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        repository = SqlGenerationRepository(engine)
        worker = repository.leased_by("replica-a")
        rows = [
            (await repository.add(generation("u1", f"batch-{new_id()}"), Lease("replica-a", 600))).generation
            for _ in range(4)
        ]
        now = datetime.now(UTC)
        for row in rows:
            row.start(now)
        succeeded, failed, elsewhere, running = rows
        succeeded.succeed(now, [], text="done")
        failed.fail(now, GenerationError("PROVIDER_REFUSED", "the provider refused the prompt"))
        updates: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if statement.lstrip().upper().startswith("UPDATE GENERATIONS"):
                updates.append(statement)

        sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            outcomes = await asyncio.gather(
                worker.save(succeeded),
                worker.save(failed),
                repository.leased_by("replica-b").save(elsewhere),  # not the lease holder: writes nothing
                worker.save(running),
            )
        finally:
            sa.event.remove(engine.sync_engine, "before_cursor_execute", count)
        assert list(outcomes) == [True, True, False, True]
        # PostgreSQL: one statement; SQLite: one UPDATE each, in the group committer's shared transaction.
        assert len(updates) == (4 if database_url.startswith("sqlite") else 1)
        for row in (succeeded, failed, running):
            assert await repository.get(row.id) == row
        async with engine.connect() as connection:
            found = (
                await connection.execute(
                    sa.select(generations.c.id, generations.c.lease_owner).where(
                        generations.c.id.in_([row.id for row in rows])
                    )
                )
            ).all()
        leases = {row.id: row.lease_owner for row in found}
        assert leases == {succeeded.id: None, failed.id: None, elsewhere.id: "replica-a", running.id: "replica-a"}
        # A terminal generation is final: a later save of it writes nothing.
        assert not await worker.save(succeeded)
    finally:
        await engine.dispose()


async def test_a_chosen_id_is_inserted_once_and_a_taken_one_is_refused_not_an_internal_error(database_url: str) -> None:
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        repository = SqlGenerationRepository(engine)
        alice, bob, chosen = f"alice-{new_id()}", f"bob-{new_id()}", new_id()  # PostgreSQL keeps other tests' rows
        first = await repository.add(generation(alice, "step-1", chosen))
        retried = await repository.add(generation(alice, "step-1", chosen))
        assert first.created and first.generation.id == chosen
        assert not retried.created and retried.generation.id == chosen

        # The insert finds the id taken and no row for (owner, request_id): another request, none, another user.
        for owner, request_id in ((alice, "step-2"), (alice, ""), (bob, "step-1")):
            with pytest.raises(GenerationIdTaken):
                await repository.add(generation(owner, request_id, chosen))
        stored = await repository.get(chosen)
        assert stored is not None and (stored.owner, stored.request_id) == (alice, "step-1")

        # request_id idempotency wins over a different chosen id: the generation that request made, nothing new.
        other_id = new_id()
        repeated = await repository.add(generation(alice, "step-1", other_id))
        assert not repeated.created and repeated.generation.id == chosen
        assert await repository.get(other_id) is None
    finally:
        await engine.dispose()


async def test_a_retried_create_with_a_chosen_id_is_started_once(database_url: str) -> None:
    # With a chosen id the retry's generation has the id of the stored one: only `created` tells them apart.
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        repository, dispatch = SqlGenerationRepository(engine), RecordingDispatch()
        services = create_services(repository, dispatch)
        alice, bob, chosen = f"alice-{new_id()}", f"bob-{new_id()}", new_id()
        created = await services.create(alice, text_request("step-1", chosen))
        retried = await services.create(alice, text_request("step-1", chosen))
        with pytest.raises(GenerationIdTaken):
            await services.create(bob, text_request("step-1", chosen))

        assert created.name == retried.name == f"generations/{chosen}"
        assert dispatch.started == [chosen] and dispatch.unreserved == 2
        page, _ = await services.list_page(alice, limit=10, state=None, kind=None, after=None)
        assert [g.id for g in page] == [chosen]
    finally:
        await engine.dispose()
