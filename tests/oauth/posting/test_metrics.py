"""Posts finished (OpenTelemetry) by platform and state, after a real publish through the worker to the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from contentpipe.oauth.domain.posts import PostOptions
from contentpipe.oauth.domain.posts_rules import NewPost
from contentpipe.oauth.service_layer.metrics import OAuthMetrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from tests.fakes.publishing_tokens import FakeTokens
from tests.oauth.posting.harness import posting_stack
from tests.oauth.posting.test_publishing import DONE, connection

pytestmark = pytest.mark.integration


async def test_published_post_is_counted_by_platform_and_state(database_url: str, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    tokens = FakeTokens()
    name = connection(tokens, "outbox", account="user-1")
    async with posting_stack(database_url, tmp_path, tokens=tokens) as stack:
        stack.app.worker.metrics = OAuthMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
        created = await stack.create(connection=name, text="counted")
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED

    data = reader.get_metrics_data()
    assert data is not None
    points = [
        ({str(k): str(v) for k, v in (point.attributes or {}).items()}, point.value)  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "contentpipe.oauth.posts.finished"
        for point in metric.data.data_points
    ]
    assert points == [({"platform": "outbox", "state": "PUBLISHED"}, 1)]


async def test_queue_stats_feed_the_queue_gauges(database_url: str, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    metrics = OAuthMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    tokens = FakeTokens()
    name = connection(tokens, "outbox", account="user-1")
    async with posting_stack(database_url, tmp_path, tokens=tokens, worker=False) as stack:
        before = datetime.now(UTC)
        await stack.create(connection=name, text="waiting 1")
        await stack.create(connection=name, text="waiting 2")
        depth, oldest = await stack.app.services.repository.queue_stats()
        assert depth == 2 and oldest is not None and oldest >= before.replace(microsecond=0)
        metrics.queue_sample(depth, oldest, oldest + timedelta(seconds=30))
    data = reader.get_metrics_data()
    assert data is not None
    values = {
        metric.name: [point.value for point in metric.data.data_points]  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert values["contentpipe.oauth.posts.queued"] == [2]
    assert values["contentpipe.oauth.posts.queued.oldest_age"] == [30.0]


async def test_create_stores_the_callers_trace_context(database_url: str, tmp_path: Path) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "outbox", account="user-1")
    request = NewPost(connection_id=name.removeprefix("connections/"), text="traced", media=(), options=PostOptions())
    async with posting_stack(database_url, tmp_path, tokens=tokens, worker=False) as stack:
        with TracerProvider().get_tracer("test").start_as_current_span("caller") as span:
            created = await stack.app.services.create("user-1", request)
        stored = await stack.app.services.repository.get(created.id)
    assert stored is not None
    assert format(span.get_span_context().trace_id, "032x") in stored.trace_context["traceparent"]
