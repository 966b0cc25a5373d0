"""The work-queue runtime every worker runs on: leased claims, lease renewal, bounded concurrency, wake-ups.

Mechanism only. A queue is a `LeaseQueue` (a repository port: claim / renew / release, SQL in the service's
adapters built on `contentpipe.common.database.claim_rows`/`renew_rows`/`release_rows`) and a handler
(`async def handle(item)`, the business rule). `LeasedWorker` claims up to the free capacity in batches, runs each
item as an asyncio task, renews all held leases in one call every third of the lease, cancels a task whose lease
was lost (or whose item no longer needs work), gives finished items' leases back, and sleeps until a `WakeSignal`
fires or the poll interval passes. Two optional hooks serve queues with more rules: a `claim` that also receives
the items this replica holds (per-owner fairness: skip owners already at their limit here), and a `watch` called
with the held ids every `watch_interval` (e.g. one query for cancel requests of everything running here).
Work this replica creates while it has room can skip the queue: `reserve()` a slot, insert the row already
leased to `settings.owner` (see `Lease`), then `start_reserved(item)` (or `unreserve()` when the insert found an
existing row or failed). No wake-up, no claim, no waiting for the loop: the item runs at once, its lease renewed and
given back like a claimed one's. A replica that dies in between leaves a leased row that its restart (same owner)
takes back at once and any other replica after the lease.
`PassLoop` is the same for queues processed in whole passes (the scheduler's due jobs, the token refresher).
A failing claim or pass (the database restarting) is logged and retried; a programming error propagates, so the
supervisor in `contentpipe.common.server` sees the loop die.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from contentpipe.common.errors import ContentpipeError

_log = logging.getLogger("contentpipe.workqueue")

ItemT = TypeVar("ItemT")
ItemT_co = TypeVar("ItemT_co", covariant=True)

# Raised by code, not by the database or the network: retrying them forever would hide a dead worker.
_BUGS = (TypeError, AttributeError, NameError, AssertionError, LookupError, NotImplementedError)


def is_bug(exc: BaseException) -> bool:
    """Whether an exception is a programming error (crash the loop) rather than a transient failure (retry)."""
    return isinstance(exc, _BUGS)


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a database call swallowed (SQLAlchemy's async bridge can lose it)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _retrying(queue: str, what: str, exc: Exception) -> None:
    """Log a transient failure of a loop step (a mapped error without a trace, anything else with one)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # The database driver turned our cancellation into its own error: shutting down, not a failed step.
        raise asyncio.CancelledError from exc
    if is_bug(exc):
        raise exc
    _log.warning(
        f"{what} failed; retrying",
        extra={"queue": queue, "error": type(exc).__name__},
        exc_info=not isinstance(exc, ContentpipeError),
    )


class WakeSignal:
    """Level-triggered wake-up for one queue: `set()` from any code in this process (sync, never blocks).

    Cross-replica wake-ups (PostgreSQL LISTEN/NOTIFY) call `set()` too; see `contentpipe.common.notify`.
    `on_set` hooks run on every local `set()` (the NOTIFY sender registers one), `set_quietly()` skips them.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._event = asyncio.Event()
        self._hooks: list[Callable[[], None]] = []
        self.signals = 0  # how many times new work was announced (`set`, `set_quietly`; not `nudge`)

    def on_set(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def set(self) -> None:
        """New work exists (this replica created it): wake the local worker and tell the other replicas."""
        self.signals += 1
        self._event.set()
        for hook in self._hooks:
            hook()

    def set_quietly(self) -> None:
        """Wake the local worker only (another replica told us)."""
        self.signals += 1
        self._event.set()

    def nudge(self) -> None:
        """Wake the local worker without announcing work (a handler finished: its lease is to be given back)."""
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, at_most: float) -> bool:
        """Until set or `at_most` seconds pass; True when woken."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout=at_most)
            return True
        return False


class HeldAwareClaim(Protocol[ItemT]):
    """A claim that also sees the items this replica holds (running or about to run), to apply per-owner limits."""

    def __call__(
        self, owner: str, limit: int, lease_seconds: float, held: Sequence[ItemT]
    ) -> Awaitable[Sequence[ItemT]]:
        """Lease up to `limit` items like `LeaseQueue.claim`; give back at once any it leased but will not return."""


class LeaseQueue(Protocol[ItemT_co]):
    """The repository port a `LeasedWorker` drives. Every call is one short transaction."""

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> Sequence[ItemT_co]:
        """Lease up to `limit` items that need work and nobody holds (or whose lease expired)."""

    async def renew(self, owner: str, ids: Sequence[str], lease_seconds: float) -> Collection[str]:
        """Extend `owner`'s live leases on `ids`; return the ids it still holds that still need work."""

    async def release(self, owner: str, ids: Sequence[str] | None = None) -> None:
        """Give back `owner`'s leases on `ids` (None: every row it holds, e.g. after a restart)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease to insert a new row with: `owner` holds it for `seconds` from the insert."""

    owner: str
    seconds: float


ItemT_contra = TypeVar("ItemT_contra", contravariant=True)


class Dispatch(Protocol[ItemT_contra]):
    """A replica's queue as the code that creates its items sees it (`LeasedWorker` is one)."""

    def reserve(self) -> Lease | None: ...

    def start_reserved(self, item: ItemT_contra) -> None: ...

    def unreserve(self) -> None: ...


async def add_and_start(
    dispatch: Dispatch[ItemT] | None,
    add: Callable[[Lease | None], Awaitable[tuple[ItemT, bool]]],
    wake: Callable[[], None],
) -> ItemT:
    """Insert a new item with `add(lease)` (it returns the stored item and whether it inserted it) and get it going:
    leased to this replica and started at once when `dispatch` has room, else queued and `wake` called. An item
    that `add` did not insert (a repeated request, answered with the earlier one) is neither started nor announced:
    its creator did that."""
    lease = dispatch.reserve() if dispatch is not None else None
    try:
        item, created = await add(lease)
    except BaseException:
        if dispatch is not None and lease is not None:
            dispatch.unreserve()
        raise
    if dispatch is not None and lease is not None:
        if created:
            dispatch.start_reserved(item)
        else:
            dispatch.unreserve()
    elif created:
        wake()
    return item


class Handled(enum.Enum):
    """What a handler may return to its `LeasedWorker` (returning None means the worker gives the lease back)."""

    # The handler's last write ended the item and cleared its lease in the same statement: nothing to give back.
    LEASE_RETURNED = "lease returned"


LEASE_RETURNED = Handled.LEASE_RETURNED


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """`owner` is this replica's lease owner (stable across a restart of the same pod lets it resume at once)."""

    owner: str
    lease_seconds: float = 30.0
    poll_interval: float = 1.0
    concurrency: int = 8
    claim_batch: int = 100

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.claim_batch < 1 or self.lease_seconds <= 0 or self.poll_interval <= 0:
            raise ValueError(f"invalid queue settings: {self}")


class LeasedWorker(Generic[ItemT]):
    """Claims items of one queue and runs `handle(item)` for each, at most `concurrency` at a time.

    When a handler ends, its lease is given back in the next release statement, unless the handler returns
    `LEASE_RETURNED` (its final write cleared the lease already)."""

    def __init__(
        self,
        name: str,
        queue: LeaseQueue[ItemT],
        handle: Callable[[ItemT], Awaitable[Handled | None]],
        settings: QueueSettings,
        *,
        key: Callable[[ItemT], str],
        wake: WakeSignal | None = None,
        claim: HeldAwareClaim[ItemT] | None = None,
        watch: Callable[[Sequence[str]], Awaitable[None]] | None = None,
        watch_interval: float = 1.0,
    ) -> None:
        if watch_interval <= 0:
            raise ValueError(f"invalid watch interval: {watch_interval}")
        self.name = name
        self.settings = settings
        self.wake = wake or WakeSignal(name)
        self._queue = queue
        self._handle = handle
        self._key = key
        self._claim = claim
        self._watch = watch
        self._watch_interval = watch_interval
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._items: dict[str, ItemT] = {}  # what the running tasks handle (a held-aware claim sees them)
        self._finished: list[str] = []
        self._reserved = 0  # slots promised to items being inserted already leased (`reserve`)
        self._serving = False  # `run()` is looping: only then may work skip the queue
        # The loop's context: what a claimed item's handler runs in, and so what an item started at once must run in
        # too, not the context of the call that created it (its deadline, request id and caller are that call's).
        self._context: contextvars.Context | None = None
        # Whether the last claim may have left claimable items behind (it was cut short by capacity or failed, or
        # the held-aware claim said so): then a finishing handler makes the loop claim again, else only release.
        self._may_have_more = True
        self._late_releases: set[asyncio.Task[None]] = set()
        self.idle = asyncio.Event()  # set while the loop sleeps until woken (tests and probes wait on it)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def running(self) -> list[str]:
        return list(self._tasks)

    def left_work_behind(self) -> None:
        """Called by a held-aware claim that skipped claimable items (e.g. an owner at its limit here): claim again
        as soon as a handler finishes."""
        self._may_have_more = True

    def held(self) -> list[ItemT]:
        """The items being handled here now."""
        return list(self._items.values())

    def reserve(self) -> Lease | None:
        """A slot for an item this replica is about to create, and the lease to insert it with; None when the loop
        is not running here or has no room (insert the item unleased and wake the queue instead). Every slot given
        must be followed by `start_reserved` or `unreserve`."""
        s = self.settings
        if not self._serving or len(self._tasks) + self._reserved >= s.concurrency:
            return None
        self._reserved += 1
        return Lease(s.owner, s.lease_seconds)

    def unreserve(self) -> None:
        """Give back a slot whose item was not created (an existing row was found, or the insert failed)."""
        self._reserved = max(self._reserved - 1, 0)

    def start_reserved(self, item: ItemT) -> None:
        """Handle an item inserted under the lease `reserve` gave: at once, as if it had been claimed."""
        self.unreserve()
        item_id = self._key(item)
        if not self._serving:
            # The loop stopped while the item was being inserted: give its lease back so it is claimable at once.
            release = asyncio.create_task(self._queue.release(self.settings.owner, [item_id]))
            self._late_releases.add(release)
            release.add_done_callback(self._late_releases.discard)
            return
        if item_id in self._tasks:
            return
        self._items[item_id] = item
        assert self._context is not None  # set before `_serving`
        self._tasks[item_id] = asyncio.create_task(
            self._run_one(item_id, item), name=f"{self.name}-{item_id}", context=self._context.copy()
        )

    async def stop_item(self, item_id: str) -> None:
        """Stop handling one item here (it was cancelled through the API); its lease is given back."""
        task = self._tasks.get(item_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run(self) -> None:
        """Claim and dispatch until cancelled; then stop the handlers and give their leases back."""
        s = self.settings
        await self._queue.release(s.owner)  # ours from before a restart (same owner): claimable again at once
        helpers = self._start_helpers()
        self._context = contextvars.copy_context()
        self._serving = True
        loop = asyncio.get_running_loop()
        claim = True
        next_poll = loop.time()
        try:
            while True:
                _raise_if_cancelling()
                self.wake.clear()
                signals = self.wake.signals
                for helper in helpers:
                    if helper.done():
                        helper.result()  # a crashed renewer or watcher is this loop's crash
                wanted = self._wanted()
                if claim:
                    next_poll = loop.time() + s.poll_interval
                started = await self._claim_once() if claim else await self._release_only()
                _raise_if_cancelling()
                # Claim again at once only after a full batch; saturated, failed or short: sleep until woken (new
                # work announced, or a handler finished) or the poll interval since the last claim passes.
                if wanted <= 0 or started == -1 or started < wanted:
                    if claim:
                        self._may_have_more = self._may_have_more or wanted <= 0 or started == -1
                    self.idle.set()
                    try:
                        await self.wake.wait(max(next_poll - loop.time(), 0.0))
                    finally:
                        self.idle.clear()
                    # Only finished handlers woke us, the queue was empty at the last claim and the poll interval has
                    # not passed: give their leases back without asking the queue again. Handlers finishing all the
                    # time never hold the poll off: it counts from the last claim.
                    claim = loop.time() >= next_poll or self.wake.signals != signals or self._may_have_more
                else:
                    self._may_have_more = True
                    claim = True
                    await asyncio.sleep(0)  # a full batch: there may be more, but let handlers run first
        finally:
            self._serving = False
            for helper in helpers:
                helper.cancel()
            await self._stop_all()

    async def drain(self) -> int:
        """Handle everything claimable now (and what it queues) to the end; returns how many items ran."""
        helpers = self._start_helpers()
        handled = 0
        try:
            while True:
                started = await self._claim_once()
                handled += max(started, 0)
                if started == -1:
                    await self.wake.wait(self.settings.poll_interval)
                    continue
                if not self._tasks and not started:
                    await self._release_finished()
                    return handled
                if self._tasks:
                    await asyncio.wait(list(self._tasks.values()), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for helper in helpers:
                helper.cancel()
            await self._stop_all()

    def _start_helpers(self) -> list[asyncio.Task[None]]:
        helpers = [asyncio.create_task(self._renew_forever(), name=f"{self.name}-lease-renewal")]
        if self._watch is not None:
            helpers.append(asyncio.create_task(self._watch_forever(self._watch), name=f"{self.name}-watch"))
        return helpers

    def _wanted(self) -> int:
        return min(self.settings.concurrency - len(self._tasks) - self._reserved, self.settings.claim_batch)

    async def _release_only(self) -> int:
        """Give back finished handlers' leases; 0, or -1 when the database failed."""
        try:
            await self._release_finished()
        except Exception as exc:
            _retrying(self.name, "releasing leases", exc)
            return -1
        return 0

    async def _claim_once(self) -> int:
        """Release finished leases, then claim up to the free capacity; -1 when the database failed."""
        s = self.settings
        self._may_have_more = False
        try:
            await self._release_finished()
            wanted = self._wanted()
            if wanted <= 0:
                return 0
            if self._claim is None:
                claimed = await self._queue.claim(s.owner, wanted, s.lease_seconds)
            else:
                claimed = await self._claim(s.owner, wanted, s.lease_seconds, list(self._items.values()))
        except Exception as exc:
            _retrying(self.name, "claiming work", exc)
            return -1
        started = 0
        for item in claimed:
            item_id = self._key(item)
            if item_id in self._tasks:
                continue  # its lease had lapsed while it ran here: re-claimed, not started twice
            self._items[item_id] = item
            self._tasks[item_id] = asyncio.create_task(self._run_one(item_id, item), name=f"{self.name}-{item_id}")
            started += 1
        return started

    async def _run_one(self, item_id: str, item: ItemT) -> None:
        handled: Handled | None = None
        try:
            handled = await self._handle(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The handler owns its item's failure states; whatever escapes it is a bug in that handler.
            _log.exception("work item handler failed", extra={"queue": self.name, "item_id": item_id})
        finally:
            if self._tasks.get(item_id) is asyncio.current_task():
                del self._tasks[item_id]
                self._items.pop(item_id, None)
                if handled is not LEASE_RETURNED:
                    self._finished.append(item_id)
                self.wake.nudge()  # capacity freed: give the lease back, and claim again if work may be waiting

    async def _release_finished(self) -> None:
        if not self._finished:
            return
        ids, self._finished = self._finished, []
        try:
            await self._queue.release(self.settings.owner, ids)
        except Exception:
            self._finished.extend(ids)
            raise

    async def _renew_forever(self) -> None:
        s = self.settings
        interval = max(s.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            ids = list(self._tasks)
            if not ids:
                continue
            try:
                held = set(await self._queue.renew(s.owner, ids, s.lease_seconds))
            except Exception as exc:
                _retrying(self.name, "renewing leases", exc)
                continue
            for item_id in ids:
                task = self._tasks.get(item_id)
                if item_id not in held and task is not None and not task.done():
                    _log.warning(
                        "lease lost or work done elsewhere; stopping here",
                        extra={"queue": self.name, "item_id": item_id},
                    )
                    task.cancel()

    async def _watch_forever(self, watch: Callable[[Sequence[str]], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            ids = list(self._tasks)
            if not ids:
                continue
            try:
                await watch(ids)
            except Exception as exc:
                _retrying(self.name, "watching held items", exc)

    async def _stop_all(self) -> None:
        tasks = list(self._tasks.values())
        ids = [*self._tasks, *self._finished]
        self._finished = []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._items.clear()
        if ids:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._queue.release(self.settings.owner, ids))


class PassLoop:
    """Runs `run_pass()` whenever woken or every `interval` seconds; a pass returns True when more work waits.

    For queues processed in whole passes: the pass claims, handles and releases its own batch.
    """

    def __init__(
        self,
        name: str,
        run_pass: Callable[[], Awaitable[bool]],
        *,
        interval: float,
        wake: WakeSignal | None = None,
        max_passes_in_a_row: int | None = 10,
    ) -> None:
        self.name = name
        self.wake = wake or WakeSignal(name)
        self._run_pass = run_pass
        self._interval = interval
        self._max_in_a_row = max_passes_in_a_row

    async def run(self) -> None:
        while True:
            _raise_if_cancelling()
            self.wake.clear()
            passes = 0
            # A backlog drains in full passes (bounded before a breather when `max_passes_in_a_row` is set).
            while self._max_in_a_row is None or passes < self._max_in_a_row:
                passes += 1
                try:
                    more = await self._run_pass()
                except Exception as exc:
                    _retrying(self.name, "pass", exc)
                    break
                if not more:
                    break
                await asyncio.sleep(0)
            _raise_if_cancelling()
            await self.wake.wait(self._interval)
