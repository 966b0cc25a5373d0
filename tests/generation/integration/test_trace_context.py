"""A generation keeps the trace context of the call that created it (stored on SQLite and PostgreSQL), so the
worker's span continues that trace later."""

from __future__ import annotations

from datetime import timedelta

import pytest
from contentpipe.common.database import create_engine, run_migrations
from contentpipe.generation.adapters.repository import SqlGenerationRepository
from contentpipe.generation.bootstrap import MIGRATIONS, VERSION_TABLE
from contentpipe.generation.domain.catalogue import LOCAL_MODELS, Catalogue
from contentpipe.generation.domain.model import GenerationKind, GenerationOptions
from contentpipe.generation.domain.validation import NewGeneration
from contentpipe.generation.service_layer.services import GenerationServices
from opentelemetry.sdk.trace import TracerProvider

from tests.generation.unit.test_worker import NoAssets

pytestmark = pytest.mark.integration


async def _no_check(url: str) -> None:
    del url


async def test_create_stores_the_callers_trace_context(database_url: str) -> None:
    await run_migrations(database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(database_url)
    try:
        repository = SqlGenerationRepository(engine)
        services = GenerationServices(
            repository=repository,
            catalogue=Catalogue(LOCAL_MODELS, "local"),
            assets=NoAssets(),
            url_check=_no_check,
            canceller=None,  # type: ignore[arg-type]
            deadline=timedelta(minutes=5),
        )
        request = NewGeneration(
            kind=GenerationKind.TEXT,
            prompt="hi",
            options=GenerationOptions(max_tokens=8),
            provider="local",
            model="local-text",
        )
        with TracerProvider().get_tracer("test").start_as_current_span("caller") as span:
            created = await services.create("u1", request)
        trace_id = format(span.get_span_context().trace_id, "032x")
        stored = await repository.get(created.id)
        assert stored is not None
        assert trace_id in stored.trace_context["traceparent"]
        untraced = await services.create("u1", request)
        assert (await repository.get(untraced.id)).trace_context == {}  # type: ignore[union-attr]
    finally:
        await engine.dispose()
