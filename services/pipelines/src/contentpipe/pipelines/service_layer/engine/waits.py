"""Waiting inside a run: back-off sleeps and long polls of children that end as soon as the run is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from contentpipe.pipelines.service_layer.engine.core import CancelRequested, EngineSettings

T = TypeVar("T")


class RunWaits:
    """Cancel-aware waiting for one run. With `cancel_event` (set by the worker's cancel watcher) a wait ends at
    once; without it, `cancel_requested` is asked between waits, which are then kept short."""

    def __init__(
        self,
        settings: EngineSettings,
        cancel_event: asyncio.Event | None,
        cancel_requested: Callable[[], Awaitable[bool]],
    ) -> None:
        self._settings = settings
        self._cancel_event = cancel_event
        self._cancel_requested = cancel_requested

    async def check(self) -> None:
        """Raise CancelRequested when the run is to be cancelled."""
        if self._cancel_event is not None:
            if self._cancel_event.is_set():
                raise CancelRequested
        elif await self._cancel_requested():
            raise CancelRequested

    async def sleep(self, seconds: float) -> None:
        """Wait, waking at once when the run is cancelled (or checking every few seconds without a watcher)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(seconds, 0.0)
        while True:
            await self.check()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if self._cancel_event is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cancel_event.wait(), timeout=remaining)
            else:
                await asyncio.sleep(min(remaining, 2.0))

    def child_wait(self) -> float:
        """How long one long poll of a child may last: short without a cancel watcher, which only checks for
        cancel requests between calls."""
        if self._cancel_event is None:
            return min(self._settings.child_wait, 2.0)
        return self._settings.child_wait

    async def until_cancelled(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await a peer call, abandoning it (CancelRequested) as soon as the run is cancelled."""
        await self.check()
        if self._cancel_event is None:
            return await call()
        pending = asyncio.ensure_future(call())
        cancelled = asyncio.ensure_future(self._cancel_event.wait())
        try:
            done, _ = await asyncio.wait((pending, cancelled), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            pending.cancel()
            raise
        finally:
            cancelled.cancel()
        if pending not in done:
            pending.cancel()
            raise CancelRequested
        return pending.result()

    async def pace(self, started: float, delay: float) -> float:
        """After a wait for a child that ended without its outcome: go again at once if the long poll used its
        time, else (an error, or a peer without long polls answering at once) back off. Returns the next delay."""
        if asyncio.get_running_loop().time() - started >= self.child_wait() / 2:
            return self._settings.poll_initial
        await self.sleep(delay)
        return min(delay * self._settings.poll_multiplier, self._settings.poll_max)
