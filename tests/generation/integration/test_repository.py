"""The generation repository on SQLite and PostgreSQL: idempotent creates answer with the stored generation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.common.database import create_engine, run_migrations
from contentpipe.common.ids import new_id
from contentpipe.common.workqueue import Lease
from contentpipe.generation.adapters.repository import SqlGenerationRepository
from contentpipe.generation.bootstrap import MIGRATIONS, VERSION_TABLE
from contentpipe.generation.domain.model import Generation, GenerationKind, GenerationOptions

pytestmark = pytest.mark.integration


def generation(owner: str, request_id: str) -> Generation:
    now = datetime.now(UTC)
    return Generation(
        id=new_id(),
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
