"""The background worker: leases queued/in-flight generations and runs each as an asyncio task.

No thread per generation: a generation waiting on a provider is a suspended coroutine (async polling), so
hundreds in flight cost little memory. Per-provider concurrency is a semaphore, create rate a token bucket.
Claims, lease renewal, wake-ups and shutdown are the common work-queue runtime's (`contentpipe.common.workqueue`);
a restarted worker with the same id takes its rows back at once and resumes them from the stored prediction ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from contentpipe.common.telemetry import extract_context, get_tracer, optional_span
from contentpipe.common.workqueue import LEASE_RETURNED, Handled, LeasedWorker, QueueSettings, WakeSignal
from contentpipe.generation.domain.model import ErrorReason, Generation, GenerationError
from contentpipe.generation.service_layer.ports import GenerationRepository
from contentpipe.generation.service_layer.runner import GenerationRunner, GenerationStopped

_log = logging.getLogger(__name__)
_tracer = get_tracer(__name__)


class TokenBucket:
    """`rate` acquisitions per second with bursts up to `burst`; waiters queue in order and never fail."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        self._rate = rate
        self._capacity = float(burst if burst is not None else max(1, int(rate)))
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self._rate <= 0:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    # The lease owner, lease, poll interval, generations in flight on this replica, claim batch.
    queue: QueueSettings
    # At most this many generations at once per provider (under `queue.concurrency` in all).
    provider_concurrency: Mapping[str, int] | None = None


class GenerationWorker:
    """The generation queue's handler on the common work-queue runtime (claims, leases, wake-ups live there)."""

    def __init__(
        self,
        repository: GenerationRepository,
        runner: GenerationRunner,
        settings: WorkerSettings,
        *,
        wake: WakeSignal | None = None,
    ) -> None:
        self._repository = repository
        self._runner = runner
        self._settings = settings
        self._semaphores = {
            name: asyncio.Semaphore(limit) for name, limit in (settings.provider_concurrency or {}).items()
        }
        self.queue: LeasedWorker[Generation] = LeasedWorker(
            "generation",
            repository,
            self._run_one,
            settings.queue,
            key=lambda generation: generation.id,
            wake=wake,
        )

    @property
    def in_flight(self) -> int:
        return self.queue.in_flight

    def wake(self) -> None:
        """A generation was queued: claim now rather than at the next poll (and tell the other replicas)."""
        self.queue.wake.set()

    async def run(self) -> None:
        """Claim and dispatch until cancelled; on cancellation stop the tasks and give back their leases."""
        await self.queue.run()

    async def cancel_local(self, generation_id: str) -> None:
        """Stop running a generation here (it was cancelled through the API)."""
        await self.queue.stop_item(generation_id)

    async def _run_one(self, generation: Generation) -> Handled | None:
        was_open = not generation.state.terminal
        semaphore = self._semaphores.get(generation.provider)
        # Parented by the call that created the generation: the provider's HTTP calls land in the caller's trace.
        span = optional_span(
            _tracer,
            "generation.run",
            context=extract_context(generation.trace_context) if generation.trace_context else None,
            attributes={"contentpipe.generation": generation.name, "contentpipe.provider": generation.provider},
        )
        try:
            with span:
                if semaphore is None:
                    await self._runner.run(generation)
                else:
                    async with semaphore:
                        await self._runner.run(generation)
            if was_open and generation.state.terminal:
                return LEASE_RETURNED  # the save that ended it cleared the lease
        except GenerationStopped:
            _log.info("generation stopped: finished elsewhere", extra={"generation_id": generation.id})
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug, not a provider answer: fail the generation instead of retrying it forever.
            _log.exception("generation crashed", extra={"generation_id": generation.id})
            with contextlib.suppress(Exception):
                if not generation.state.terminal:
                    generation.fail(
                        datetime.now(UTC),
                        GenerationError(
                            ErrorReason.PROVIDER_FAILED.value,
                            f"internal error while running the generation ({type(exc).__name__}); try again",
                            retryable=True,
                        ),
                    )
                    await self._repository.save(generation)
        return None


class WorkerCanceller:
    """Cancels a generation that the API just marked CANCELED: the local task, then the provider's predictions."""

    def __init__(self, worker: GenerationWorker, runner: GenerationRunner) -> None:
        self._worker = worker
        self._runner = runner

    async def cancel(self, generation: Generation) -> None:
        await self._worker.cancel_local(generation.id)
        for record in generation.predictions:
            if record.terminal or not record.id:
                continue
            try:
                provider = self._runner.provider_of(generation)
                await asyncio.wait_for(provider.cancel(record, self._runner.spec_of(generation)), timeout=10)
            except Exception as exc:
                _log.warning(
                    "cancel at provider failed", extra={"generation_id": generation.id, "error": type(exc).__name__}
                )
