"""Create, runner and worker over in-memory fakes of their ports: caller-chosen ids, limits, failures, deadlines,
cancellation, scale."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.ids import new_id
from contentpipe.common.workqueue import Lease, QueueSettings
from contentpipe.generation.domain.catalogue import LOCAL_MODELS, Catalogue, ModelSpec
from contentpipe.generation.domain.model import (
    Asset,
    ErrorReason,
    Generation,
    GenerationFailure,
    GenerationKind,
    GenerationOptions,
    GenerationState,
    PredictionRecord,
)
from contentpipe.generation.domain.validation import NewGeneration
from contentpipe.generation.service_layer.ports import (
    Added,
    Checkpoint,
    GenerationIdTaken,
    ListQuery,
    OutputFile,
    StepInput,
    StepResult,
)
from contentpipe.generation.service_layer.runner import GenerationRunner
from contentpipe.generation.service_layer.services import GenerationServices
from contentpipe.generation.service_layer.worker import GenerationWorker, WorkerSettings

pytestmark = pytest.mark.unit


class MemoryRepository:
    def __init__(self) -> None:
        self.rows: dict[str, Generation] = {}
        self.leases: dict[str, str] = {}
        self.saves = 0
        self.released: list[str] = []

    async def add(self, generation: Generation, lease: Lease | None = None) -> Added:
        for row in self.rows.values():
            if generation.request_id and (row.owner, row.request_id) == (generation.owner, generation.request_id):
                return Added(row, created=False)
        if generation.id in self.rows:
            raise GenerationIdTaken(generation.id)
        self.rows[generation.id] = replace(generation)
        return Added(generation, created=True)

    async def get(self, generation_id: str) -> Generation | None:
        return self.rows.get(generation_id)

    async def page(self, query: ListQuery) -> list[Generation]:
        return list(self.rows.values())[: query.limit]

    async def save(self, generation: Generation) -> bool:
        self.saves += 1
        if self.rows[generation.id].state.terminal:
            return False
        self.rows[generation.id] = replace(generation, predictions=list(generation.predictions))
        if generation.state.terminal:  # as the SQL repository: the save that ends it gives the lease back
            self.leases.pop(generation.id, None)
        return True

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Generation]:
        free = [g for g in self.rows.values() if not g.state.terminal and g.id not in self.leases][:limit]
        for generation in free:
            self.leases[generation.id] = worker_id
        return [replace(g, predictions=list(g.predictions)) for g in free]

    async def renew(self, worker_id: str, ids: Sequence[str], lease_seconds: float) -> set[str]:
        return {i for i in ids if self.leases.get(i) == worker_id and not self.rows[i].state.terminal}

    async def release(self, worker_id: str, ids: Sequence[str] | None = None) -> None:
        self.released.extend(self.leases if ids is None else ids)
        for generation_id in list(self.leases if ids is None else ids):
            if self.leases.get(generation_id) == worker_id:
                del self.leases[generation_id]


class SleepyProvider:
    """Takes `seconds` per prediction, records peak concurrency and cancels."""

    name = "local"

    def __init__(self, seconds: float, fail: ErrorReason | None = None) -> None:
        self.seconds = seconds
        self.fail = fail
        self.running = 0
        self.peak = 0
        self.cancelled: list[str] = []

    async def run(self, step: StepInput, record: PredictionRecord, checkpoint: Checkpoint) -> StepResult:
        record.id = f"p-{step.generation_id}"
        record.status = "processing"
        await checkpoint(0.5)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        if self.fail is not None:
            record.status = "failed"
            raise GenerationFailure(self.fail, "model crashed")
        record.status = "succeeded"
        return StepResult(text="done")

    async def cancel(self, record: PredictionRecord, spec: ModelSpec) -> None:
        self.cancelled.append(record.id)


class NoAssets:
    async def ingest(self, output: OutputFile) -> Asset:
        raise AssertionError("TEXT has no files")

    def present(self, asset: Asset, now: datetime) -> Asset:
        return asset

    async def inline_source(self, asset: Asset) -> str:
        return asset.uri


class RecordingDispatch:
    """A replica's queue with room for everything: records what create starts and gives back."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.unreserved = 0

    def reserve(self) -> Lease | None:
        return Lease("replica-a", 600)

    def start_reserved(self, generation: Generation) -> None:
        self.started.append(generation.id)

    def unreserve(self) -> None:
        self.unreserved += 1


async def _any_url(url: str) -> None:
    del url


def create_services(repo: object, dispatch: RecordingDispatch | None = None) -> GenerationServices:
    return GenerationServices(
        repository=repo,  # type: ignore[arg-type]
        catalogue=Catalogue(LOCAL_MODELS, "local"),
        assets=NoAssets(),
        url_check=_any_url,
        canceller=None,  # type: ignore[arg-type]
        deadline=timedelta(minutes=5),
        dispatch=dispatch,
    )


def text_request(request_id: str = "", generation_id: str = "") -> NewGeneration:
    return NewGeneration(
        GenerationKind.TEXT, "a haiku", GenerationOptions(), request_id=request_id, generation_id=generation_id
    )


def _text(i: int, deadline: timedelta = timedelta(minutes=5)) -> Generation:
    now = datetime.now(UTC)
    return Generation(
        id=f"g{i:04d}", owner="u", kind=GenerationKind.TEXT, prompt="p", options=GenerationOptions(max_tokens=8),
        provider="local", model="local-text", create_time=now, deadline_time=now + deadline,
    )  # fmt: skip


def _worker(repo: MemoryRepository, provider: SleepyProvider, concurrency: int) -> GenerationWorker:
    runner = GenerationRunner(repo, {"local": provider}, Catalogue(LOCAL_MODELS, "local"), NoAssets())
    settings = WorkerSettings(
        QueueSettings(owner="w", lease_seconds=30, poll_interval=0.02, concurrency=1000, claim_batch=200),
        provider_concurrency={"local": concurrency},
    )
    return GenerationWorker(repo, runner, settings)


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_500_generations_on_a_1s_provider_finish_in_about_a_second_without_threads() -> None:
    repo, provider = MemoryRepository(), SleepyProvider(1.0)
    for i in range(500):
        await repo.add(_text(i))
    worker = _worker(repo, provider, concurrency=1000)
    threads = threading.active_count()
    started = time.monotonic()
    task = asyncio.create_task(worker.run())
    await _until(lambda: all(g.state is GenerationState.SUCCEEDED for g in repo.rows.values()))
    elapsed = time.monotonic() - started
    assert threading.active_count() <= threads  # async polling: no thread per generation (others may end)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert provider.peak == 500
    assert elapsed < 2.5  # 1 s of provider time; the rest is scheduling on a busy 2-core machine


async def test_the_save_that_ends_a_generation_gives_its_lease_back_without_a_release() -> None:
    repo, provider = MemoryRepository(), SleepyProvider(0.01)
    await repo.add(_text(5))
    assert await _worker(repo, provider, concurrency=2).queue.drain() == 1
    assert repo.rows["g0005"].state is GenerationState.SUCCEEDED
    assert "g0005" not in repo.leases and "g0005" not in repo.released


class AnsweredAtOnce:
    """A provider whose create answers with the finished prediction (Replicate's `Prefer: wait`)."""

    name = "local"

    async def run(self, step: StepInput, record: PredictionRecord, checkpoint: Checkpoint) -> StepResult:
        record.id, record.status = f"p-{step.generation_id}", "succeeded"
        await checkpoint(1.0)
        if step.kind is GenerationKind.TEXT:
            return StepResult(text="done")
        return StepResult(files=["https://files.example/out.png"])

    async def cancel(self, record: PredictionRecord, spec: ModelSpec) -> None:
        del record, spec


class CountingAssets(NoAssets):
    def __init__(self, repo: MemoryRepository) -> None:
        self.saves_before_ingest: list[int] = []
        self._repo = repo

    async def ingest(self, output: OutputFile) -> Asset:
        self.saves_before_ingest.append(self._repo.saves)
        return Asset(uri=f"generations/{output.key}", content_type="image/png", size_bytes=1, sha256="0" * 64,
                     storage_key=output.key)  # fmt: skip


async def test_a_text_prediction_that_ends_at_once_is_saved_with_the_generation_not_before_it() -> None:
    repo = MemoryRepository()
    await repo.add(_text(7))
    runner = GenerationRunner(repo, {"local": AnsweredAtOnce()}, Catalogue(LOCAL_MODELS, "local"), NoAssets())
    done = await runner.run(replace(repo.rows["g0007"]))
    assert done.state is GenerationState.SUCCEEDED and repo.saves == 1
    assert repo.rows["g0007"].predictions[0].id == "p-g0007"

    # An image still has its output to fetch: the finished prediction is saved first, so a restart does not
    # create it again.
    repo = MemoryRepository()
    image = replace(_text(8), kind=GenerationKind.IMAGE, model="local-image")
    await repo.add(image)
    assets = CountingAssets(repo)
    runner = GenerationRunner(repo, {"local": AnsweredAtOnce()}, Catalogue(LOCAL_MODELS, "local"), assets)
    done = await runner.run(replace(repo.rows["g0008"]))
    assert done.state is GenerationState.SUCCEEDED and assets.saves_before_ingest == [1] and repo.saves == 2


async def test_per_provider_concurrency_makes_generations_wait_not_fail() -> None:
    repo, provider = MemoryRepository(), SleepyProvider(0.05)
    for i in range(12):
        await repo.add(_text(i))
    task = asyncio.create_task(_worker(repo, provider, concurrency=3).run())
    await _until(lambda: all(g.state is GenerationState.SUCCEEDED for g in repo.rows.values()))
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert provider.peak == 3
    assert all(g.text == "done" and g.progress == 1.0 for g in repo.rows.values())


async def test_provider_failure_and_deadline_end_in_failed_with_a_reason() -> None:
    repo = MemoryRepository()
    failing = SleepyProvider(0.01, fail=ErrorReason.PROVIDER_FAILED)
    await repo.add(_text(1))
    task = asyncio.create_task(_worker(repo, failing, 2).run())
    await _until(lambda: repo.rows["g0001"].state.terminal)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    failed = repo.rows["g0001"]
    assert failed.state is GenerationState.FAILED and failed.error is not None
    assert (failed.error.reason, failed.predictions[0].status) == ("PROVIDER_FAILED", "failed")

    repo, slow = MemoryRepository(), SleepyProvider(30)
    await repo.add(_text(2, deadline=timedelta(milliseconds=300)))
    task = asyncio.create_task(_worker(repo, slow, 2).run())
    await _until(lambda: repo.rows["g0002"].state.terminal)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    late = repo.rows["g0002"]
    assert late.error is not None and late.error.reason == "DEADLINE_EXCEEDED" and late.error.retryable
    assert slow.cancelled == ["p-g0002"]


async def test_a_generation_cancelled_elsewhere_is_not_overwritten_and_its_task_stops() -> None:
    repo, provider = MemoryRepository(), SleepyProvider(30)
    await repo.add(_text(3))
    worker = _worker(repo, provider, 2)
    task = asyncio.create_task(worker.run())
    await _until(lambda: provider.running == 1)
    stored = repo.rows["g0003"]
    stored.cancel(datetime.now(UTC))  # what CancelGeneration persisted
    await worker.cancel_local("g0003")
    await _until(lambda: worker.in_flight == 0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert repo.rows["g0003"].state is GenerationState.CANCELED


async def test_a_chosen_id_names_the_generation_and_a_retried_create_is_answered_without_a_second_start() -> None:
    repo, dispatch = MemoryRepository(), RecordingDispatch()
    services = create_services(repo, dispatch)
    chosen = new_id()
    created = await services.create("u1", text_request("step-1", chosen))
    retried = await services.create("u1", text_request("step-1", chosen))

    assert created.name == retried.name == f"generations/{chosen}"
    assert list(repo.rows) == [chosen]
    assert dispatch.started == [chosen]  # the retry's reserved slot is given back, not used to run it again
    assert dispatch.unreserved == 1


async def test_a_retried_create_wakes_the_queue_only_for_the_first_insert() -> None:
    repo, wakes = MemoryRepository(), []
    services = create_services(repo)
    services.wake_worker = lambda: wakes.append(1)
    chosen = new_id()
    await services.create("u1", text_request("step-1", chosen))
    await services.create("u1", text_request("step-1", chosen))
    assert len(wakes) == 1


async def test_a_taken_id_is_already_exists_for_another_request_and_another_user_alike() -> None:
    repo, dispatch = MemoryRepository(), RecordingDispatch()
    services = create_services(repo, dispatch)
    chosen = new_id()
    await services.create("alice", text_request("step-1", chosen))

    refusals = []
    for owner, request_id in (("alice", "step-2"), ("alice", ""), ("bob", "step-1")):
        with pytest.raises(GenerationIdTaken) as caught:
            await services.create(owner, text_request(request_id, chosen))
        refusals.append(caught.value)
    assert {(e.reason, e.message) for e in refusals} == {(refusals[0].reason, refusals[0].message)}
    assert refusals[0].reason == "GENERATION_ID_TAKEN" and chosen in refusals[0].message
    assert "alice" not in refusals[0].message and "haiku" not in refusals[0].message
    assert list(repo.rows) == [chosen] and repo.rows[chosen].owner == "alice"
    assert dispatch.started == [chosen] and dispatch.unreserved == 3  # no slot leaks on a refusal


async def test_a_repeated_request_id_with_another_id_returns_the_generation_that_request_made() -> None:
    repo = MemoryRepository()
    services = create_services(repo, RecordingDispatch())
    first = await services.create("u1", text_request("step-1", new_id()))
    again = await services.create("u1", text_request("step-1", new_id()))
    assert again.id == first.id and list(repo.rows) == [first.id]


@pytest.mark.parametrize("bad", ["ABCDEF0123456789ABCDEF0123456789", "abc", "0190b6e4-7c1d-7000-8000-00000000000a"])
async def test_a_malformed_generation_id_is_invalid_argument_on_that_field(bad: str) -> None:
    repo = MemoryRepository()
    with pytest.raises(InvalidArgument) as caught:
        await create_services(repo).create("u1", text_request(generation_id=bad))
    assert [v.field for v in caught.value.violations] == ["generation_id"]
    assert not repo.rows


async def test_validate_only_checks_a_chosen_id_and_creates_nothing() -> None:
    repo, dispatch = MemoryRepository(), RecordingDispatch()
    services = create_services(repo, dispatch)
    chosen = new_id()
    checked = await services.create("u1", text_request("step-1", chosen), validate_only=True)
    assert checked.name == "" and not repo.rows and not dispatch.started

    await services.create("u1", text_request("step-1", chosen))
    with pytest.raises(GenerationIdTaken):
        await services.create("u2", text_request("step-1", chosen), validate_only=True)
    with pytest.raises(InvalidArgument):
        await services.create("u1", text_request(generation_id="not-an-id"), validate_only=True)
    assert list(repo.rows) == [chosen] and dispatch.started == [chosen]
