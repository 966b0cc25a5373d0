"""In-process change notifications for long polls (WaitGeneration, WaitPost): a writer says "row X changed",
every waiter on X in this process wakes at once.

`notify` reaches waiters in the same process as the writer; on PostgreSQL, `contentpipe.common.notify.ChangeChannel`
carries it to the other replicas (LISTEN/NOTIFY), which wake their waiters with `notify_quietly`. A long poll still
re-reads its row every `recheck` seconds (see `wait_for`), which covers notifications lost to a restart or a dropped
LISTEN connection: the cost of a lost one is latency, never a missed change.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

# Upper bound of any long poll, whatever the caller asks for.
MAX_WAIT_SECONDS = 30.0
# A waiter re-reads this often even without a notification (changes made by another replica).
RECHECK_SECONDS = 1.0
# How long a final state written here answers reads without the database (`ChangeNotifier.final`), and how many.
FINAL_SECONDS = 10.0
FINAL_ENTRIES = 10_000
# How long a long poll that may start from a snapshot (`wait_for(visible=...)`) waits for one before reading its row.
FIRST_READ_GRACE_SECONDS = 0.02


class _Subscription:
    """One waiter: its wake-up event and the snapshots notified since it last looked."""

    __slots__ = ("event", "snapshots")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.snapshots: list[object] = []


class ChangeNotifier:
    """Keyed wake-ups. `notify(key)` is synchronous and cheap: call it after the change is committed.

    `notify(key, snapshot)` also hands waiters a copy of what was committed, so a waiter can see that a change is
    not the one it waits for without reading the row again (see `wait_for`)."""

    def __init__(self, *, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self._waiters: dict[str, set[_Subscription]] = {}
        self._hooks: list[Callable[[str], None]] = []
        self._finals: OrderedDict[str, tuple[float, object]] = OrderedDict()  # key -> (expiry, snapshot)
        # How often `wait_for` re-reads without a notification (a setting: tests lengthen it to prove a wake-up
        # came from a notification).
        self.recheck_seconds = recheck_seconds

    def on_notify(self, hook: Callable[[str], None]) -> None:
        """Run `hook(key)` on every `notify` (the cross-replica sender registers one), not on `notify_quietly`."""
        self._hooks.append(hook)

    def notify(self, key: str, snapshot: object = None, *, final: bool = False) -> None:
        """`key` changed in this process (committed): wake its waiters here and tell the other replicas (the key
        only: a snapshot stays in this process). `final`: the snapshot's state never changes again (a finished
        generation or post), so `final(key)` answers with it for a while."""
        if final and snapshot is not None:
            self._remember_final(key, snapshot)
        self.notify_quietly(key, snapshot)
        for hook in self._hooks:
            hook(key)

    def final(self, key: str, kind: type[T]) -> T | None:
        """The final state written here for `key` in the last `FINAL_SECONDS`, if any: a read of a finished row
        right after it finished (a client's wait that follows its create) needs no query. The caller applies the
        same checks as to a row it read (ownership)."""
        entry = self._finals.get(key)
        if entry is None:
            return None
        expiry, snapshot = entry
        if expiry < time.monotonic() or not isinstance(snapshot, kind):
            return None
        return copy.copy(snapshot)  # callers may change what they get (e.g. present URLs): never the snapshot

    def _remember_final(self, key: str, snapshot: object) -> None:
        now = time.monotonic()
        finals = self._finals
        finals[key] = (now + FINAL_SECONDS, snapshot)
        finals.move_to_end(key)
        while finals and (len(finals) > FINAL_ENTRIES or next(iter(finals.values()))[0] < now):
            finals.popitem(last=False)

    def notify_quietly(self, key: str, snapshot: object = None) -> None:
        """Wake the waiters on `key` in this process only (another replica told us: no snapshot, they re-read)."""
        for waiter in self._waiters.get(key, ()):
            waiter.snapshots.append(snapshot)
            waiter.event.set()

    def notify_all_quietly(self) -> None:
        """Wake every waiter here (notifications may have been lost, e.g. while a LISTEN connection was down)."""
        for key in list(self._waiters):
            self.notify_quietly(key)

    @contextlib.contextmanager
    def subscribe(self, key: str) -> Iterator[_Subscription]:
        """A subscription notified by every `notify(key)` from now until the block ends (subscribe, then read, then
        wait: a change between the read and the wait is not missed)."""
        waiter = _Subscription()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(waiter)
        try:
            yield waiter
        finally:
            waiters.discard(waiter)
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
    recheck: float | None = None,
    visible: Callable[[T], bool] | None = None,
) -> T:
    """Read until `done(value)` or `max_wait` seconds pass; between reads, sleep until `key` is notified (or `recheck`
    seconds, by default the notifier's). Returns the last value read. Errors of `read` (NotFound, ...) propagate.

    With `visible` (the caller's check that a value is the caller's to see, as `read` checks a row), the first read
    waits up to `FIRST_READ_GRACE_SECONDS` for a snapshot instead: a row being written in this process (a child the
    caller has just created, a run this replica executes) is answered from what its writer committed next, which is
    newer than the row was when the wait began. Without a snapshot in that time (a row written elsewhere, or not at
    all) the row is read.

    A snapshot is what the writer committed (`notify(key, snapshot)` after the commit, a copy of the object exactly as
    written), so the row is not read again for it: when the newest snapshot since the last read is `done`, it is the
    answer; when every snapshot is there and none is `done`, the wait goes on. A bare notification (another replica,
    or a writer without a snapshot) and the recheck interval read the row."""
    if recheck is None:
        recheck = notifier.recheck_seconds
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    with notifier.subscribe(key) as waiter:
        value = await _first_value(waiter, read, visible, min(FIRST_READ_GRACE_SECONDS, max_wait))
        while True:
            remaining = deadline - loop.time()
            if done(value) or remaining <= 0:
                return value
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), timeout=min(remaining, recheck))
            waiter.event.clear()
            snapshots, waiter.snapshots = waiter.snapshots, []
            newest = snapshots[-1] if snapshots else None
            if newest is not None and done(newest):  # type: ignore[arg-type]
                return newest  # type: ignore[return-value]
            # Read after a timeout (another replica may have written), a bare notification, or at the bound (the
            # caller gets the row as it is then). Otherwise every committed change was seen and none is the awaited
            # one: keep waiting without a read.
            seen_all = bool(snapshots) and all(s is not None and not done(s) for s in snapshots)  # type: ignore[arg-type]
            if not seen_all or deadline - loop.time() <= 0:
                value = await read()


async def _first_value(
    waiter: _Subscription, read: Callable[[], Awaitable[T]], visible: Callable[[T], bool] | None, grace: float
) -> T:
    """The value a wait starts from: a snapshot committed since the subscription (see `wait_for`), else a read.
    Notifications during the read stay pending: the wait looks at them after it."""
    if visible is not None and grace > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.event.wait(), timeout=grace)
        snapshots = waiter.snapshots
        if snapshots and all(snapshot is not None for snapshot in snapshots) and visible(snapshots[-1]):  # type: ignore[arg-type]
            waiter.snapshots = []
            waiter.event.clear()
            return snapshots[-1]  # type: ignore[return-value]
    return await read()
