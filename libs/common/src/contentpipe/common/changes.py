"""In-process change notifications for long polls (WaitGeneration, WaitPost): a writer says "row X changed",
every waiter on X in this process wakes at once.

This only reaches waiters in the same process as the writer. A long poll must therefore also re-read its row
every `recheck` seconds (see `wait_for`), which covers writers in other replicas and notifications lost to a
restart; the cost is latency, never a missed change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

# Upper bound of any long poll, whatever the caller asks for.
MAX_WAIT_SECONDS = 30.0
# A waiter re-reads this often even without a notification (changes made by another replica).
RECHECK_SECONDS = 1.0


class ChangeNotifier:
    """Keyed wake-ups. `notify(key)` is synchronous and cheap: call it after the change is committed."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def notify(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[asyncio.Event]:
        """An event set by every `notify(key)` from now until the block ends (subscribe, then read, then wait:
        a change between the read and the wait is not missed)."""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(event)
        try:
            yield event
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(key, None)

    @property
    def watched(self) -> int:
        """How many keys have waiters now (for tests and metrics)."""
        return len(self._waiters)


def wait_seconds(requested: float | None) -> float:
    """The bound of one long poll: unset or zero → the maximum; never above it."""
    if requested is None or requested <= 0:
        return MAX_WAIT_SECONDS
    return min(requested, MAX_WAIT_SECONDS)


async def wait_for(
    notifier: ChangeNotifier,
    key: str,
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    max_wait: float,
    *,
    recheck: float = RECHECK_SECONDS,
) -> T:
    """Read until `done(value)` or `max_wait` seconds pass; between reads, sleep until `key` is notified (or `recheck`
    seconds). Returns the last value read. Errors of `read` (NotFound, ...) propagate."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    with notifier.subscribe(key) as changed:
        while True:
            changed.clear()
            value = await read()
            remaining = deadline - loop.time()
            if done(value) or remaining <= 0:
                return value
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, recheck))
