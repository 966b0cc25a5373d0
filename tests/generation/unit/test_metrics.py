"""Generation metrics (OpenTelemetry) after real runs through the runner: finished by state, latency per model."""

from __future__ import annotations

import pytest
from contentpipe.generation.domain.catalogue import LOCAL_MODELS, Catalogue
from contentpipe.generation.domain.model import ErrorReason, GenerationState
from contentpipe.generation.service_layer.metrics import GenerationMetrics
from contentpipe.generation.service_layer.runner import GenerationRunner
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.generation.unit.test_worker import MemoryRepository, NoAssets, SleepyProvider, _text

pytestmark = pytest.mark.unit


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, str], object]]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[tuple[dict[str, str], object]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = (point.count, point.sum)  # type: ignore[union-attr]
                    attributes = {str(k): str(v) for k, v in (point.attributes or {}).items()}
                    out.setdefault(metric.name, []).append((attributes, value))
    return out


async def test_runs_record_finished_by_state_and_latency_by_provider_and_model() -> None:
    reader = InMemoryMetricReader()
    metrics = GenerationMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
    repo = MemoryRepository()
    catalogue = Catalogue(LOCAL_MODELS, "local")
    ok = GenerationRunner(repo, {"local": SleepyProvider(0.05)}, catalogue, NoAssets(), metrics=metrics)
    bad = GenerationRunner(
        repo, {"local": SleepyProvider(0.0, fail=ErrorReason.PROVIDER_FAILED)}, catalogue, NoAssets(), metrics=metrics
    )
    for runner, i in ((ok, 1), (ok, 2), (bad, 3)):
        generation = (await repo.add(_text(i))).generation
        done = await runner.run(generation)
        assert done.state.terminal

    points = _points(reader)
    finished = {attrs["state"]: (attrs, value) for attrs, value in points["contentpipe.generation.finished"]}
    assert finished[GenerationState.SUCCEEDED.value] == (
        {"provider": "local", "model": "local-text", "state": "SUCCEEDED"},
        2,
    )
    assert finished[GenerationState.FAILED.value][1] == 1
    durations: dict[str, tuple[int, float]] = {}
    for attrs, value in points["contentpipe.generation.duration"]:
        assert isinstance(value, tuple) and attrs["model"] == "local-text"
        durations[attrs["state"]] = value
    count, total = durations["SUCCEEDED"]
    assert count == 2 and total >= 0.1  # two runs of a 50 ms provider
    assert durations["FAILED"][0] == 1
