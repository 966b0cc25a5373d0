"""Cross-replica wake-ups over PostgreSQL LISTEN/NOTIFY (SQLite: one process, in-process wake-ups only).

Two uses, one mechanism:
- `PgWakeChannel`, a work queue's: a replica that queues work calls `WakeSignal.set()`: its own worker wakes at once
  and, through the hook installed here, one `pg_notify(channel, replica id)` goes out after the creating transaction
  committed; every other replica's worker wakes.
- `ChangeChannel`, a service's long polls': every `ChangeNotifier.notify(key)` (a row committed) is sent as the key,
  and every other replica wakes its waiters on that key, which re-read the row.

A sender never adds a round trip to the writer's transaction: the NOTIFY goes out afterwards in its own autocommit
statement, at most one in flight per channel, and what is notified meanwhile is coalesced into the next one. Each
replica listens with one dedicated psycopg connection per channel (autocommit, outside the pool), named
`contentpipe-listen:<channel>` (its `application_name`); a sender looks at most every `LISTENERS_TTL_SECONDS` for
such connections of other replicas in `pg_stat_activity` and sends nothing while there are none (one replica: its
waiters were woken in-process). Delivery is best effort: a lost notification (the listener reconnecting, the
database restarting, a replica that started listening since the sender last looked) costs at most one poll
interval or re-read, and a listener that (re)connects wakes everything once to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import psycopg
from contentpipe.common.changes import ChangeNotifier
from contentpipe.common.database import is_postgresql
from contentpipe.common.ids import new_id
from contentpipe.common.workqueue import WakeSignal
from psycopg import sql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

_log = logging.getLogger("contentpipe.notify")
_RECONNECT_MAX_SECONDS = 10.0
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more: keys are sent in payloads below this.
_MAX_PAYLOAD_BYTES = 7900
# How long a sender trusts what it found about other replicas' listeners (a new one misses at most this long).
LISTENERS_TTL_SECONDS = 5.0


def listener_name(channel: str) -> str:
    """The `application_name` of a replica's LISTEN connection on `channel` (what senders look for)."""
    return f"contentpipe-listen:{channel}"


def conninfo_for(database_url: str) -> str:
    """The libpq URI psycopg connects with, from a SQLAlchemy URL (`postgresql+psycopg://…`)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class _NotifySender:
    """NOTIFY statements on a dedicated autocommit connection, opened at the first one and again after a failure:
    a statement on it costs ~0.5 ms of CPU, through the SQLAlchemy pool ~1.8 ms (checkout, options, reset)."""

    def __init__(self, conninfo: str, channel: str, listeners_ttl: float) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._connection: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._listeners_ttl = listeners_ttl
        self._others_checked_at: float | None = None
        self._others = True
        self.own_listener_pid = 0  # the backend of this replica's LISTEN connection (0: none yet)

    async def others_listen(self) -> bool:
        """Whether another replica listens on the channel, as last looked up (at most `listeners_ttl` ago). When the
        lookup fails, assume one does: a notification too many costs little, one too few costs a poll interval."""
        now = asyncio.get_running_loop().time()
        if self._others_checked_at is not None and now - self._others_checked_at < self._listeners_ttl:
            return self._others
        self._others_checked_at = now
        try:
            connection = await self._connect()
            cursor = await connection.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = %s AND pid <> %s",
                (listener_name(self._channel), self.own_listener_pid),
            )
            row = await cursor.fetchone()
            self._others = row is None or bool(row[0])
        except Exception:
            await self.close()
            self._others = True
        return self._others

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        return self._connection

    async def execute(self, query: str, params: tuple[object, ...]) -> None:
        """Send one statement; on failure the connection is dropped (the next statement opens a new one)."""
        try:
            await (await self._connect()).execute(query, params)
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


class PgWakeChannel:
    """LISTEN/NOTIFY for one queue's `WakeSignal`; `listen_forever` is a background loop of the service."""

    def __init__(
        self, engine: AsyncEngine, channel: str, signal: WakeSignal, *, listeners_ttl: float = LISTENERS_TTL_SECONDS
    ) -> None:
        if not channel.isidentifier() or len(channel) > 63:
            raise ValueError(f"invalid NOTIFY channel name {channel!r}")
        self.channel = channel
        self.name = f"listen-{channel}"
        self.listening = asyncio.Event()  # set while LISTEN is active (tests wait on it)
        self.statements = 0  # NOTIFY statements sent (tests read it)
        self._conninfo = conninfo_for(engine.url.render_as_string(hide_password=False))
        self._signal = signal
        self._replica = new_id()  # our own notifications come back to us: skip them
        self._sending: asyncio.Task[None] | None = None
        self._sender = _NotifySender(self._conninfo, channel, listeners_ttl)
        self._again = False
        signal.on_set(self._notify_soon)

    def _notify_soon(self) -> None:
        if self._sending is not None and not self._sending.done():
            self._again = True  # coalesce a burst of creates into one more notification
            return
        with contextlib.suppress(RuntimeError):  # no running loop (a sync caller at shutdown): polling covers it
            self._sending = asyncio.get_running_loop().create_task(self._send(), name=f"notify-{self.channel}")

    async def _send(self) -> None:
        while True:
            self._again = False
            try:
                if not await self._sender.others_listen():
                    return  # no other replica: our own worker was woken in-process
                await self._sender.execute("SELECT pg_notify(%s, %s)", (self.channel, self._replica))
                self.statements += 1
            except Exception as exc:
                _log.warning(
                    "NOTIFY failed; other replicas poll", extra={"channel": self.channel, "error": type(exc).__name__}
                )
                return
            if not self._again:
                return

    async def listen_forever(self) -> None:
        await _listen_forever(
            self._conninfo, self.channel, self.listening, self._on_notification, self._catch_up, sender=self._sender
        )

    def _catch_up(self) -> None:
        self._signal.set_quietly()  # notifications sent while we were not listening are lost

    def _on_notification(self, payload: str) -> None:
        if payload != self._replica:
            self._signal.set_quietly()

    async def close(self) -> None:
        if self._sending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sending), timeout=2)
        await self._sender.close()


class ChangeChannel:
    """LISTEN/NOTIFY for one service's `ChangeNotifier`: a key notified in this replica wakes the long polls waiting
    on it in every replica; `listen_forever` is a background loop of every replica (any of them serves long polls).

    Payload: this replica's id, then the keys, space-separated (ids never hold a space). Keys notified in the same
    event-loop tick, or while the previous statement is in flight, go out together in one statement."""

    def __init__(
        self,
        engine: AsyncEngine,
        channel: str,
        changes: ChangeNotifier,
        *,
        listeners_ttl: float = LISTENERS_TTL_SECONDS,
    ) -> None:
        if not channel.isidentifier() or len(channel) > 63:
            raise ValueError(f"invalid NOTIFY channel name {channel!r}")
        self.channel = channel
        self.name = f"listen-{channel}"
        self.listening = asyncio.Event()  # set while LISTEN is active (tests wait on it)
        self.statements = 0  # NOTIFY statements sent (tests and the cost measurement read it)
        self._conninfo = conninfo_for(engine.url.render_as_string(hide_password=False))
        self._changes = changes
        self._replica = new_id()  # our own notifications come back to us: skip them
        self._pending: dict[str, None] = {}  # keys to send, in notification order, each once
        self._sending: asyncio.Task[None] | None = None
        self._sender = _NotifySender(self._conninfo, channel, listeners_ttl)  # not the pool: see _NotifySender
        changes.on_notify(self._notify_soon)

    def _notify_soon(self, key: str) -> None:
        self._pending[key] = None
        if self._sending is not None and not self._sending.done():
            return  # the running sender takes it in its next statement
        with contextlib.suppress(RuntimeError):  # no running loop (a sync caller at shutdown): re-reads cover it
            self._sending = asyncio.get_running_loop().create_task(self._send(), name=f"notify-{self.channel}")

    async def flush(self) -> None:
        """Until what was notified so far went out (or was dropped: no other replica listens)."""
        while self._sending is not None and not self._sending.done():
            await asyncio.shield(self._sending)

    def _payloads(self, keys: list[str]) -> list[str]:
        payloads: list[list[str]] = [[self._replica]]
        size = len(self._replica)
        for key in keys:
            key_size = 1 + len(key.encode())
            if size + key_size > _MAX_PAYLOAD_BYTES:
                payloads.append([self._replica])
                size = len(self._replica)
            payloads[-1].append(key)
            size += key_size
        return [" ".join(parts) for parts in payloads]

    async def _send(self) -> None:
        while self._pending:
            keys = list(self._pending)
            self._pending.clear()
            try:
                if not await self._sender.others_listen():
                    return  # no other replica: the waiters here were woken in-process
                await self._sender.execute(
                    "SELECT pg_notify(%s, payload) FROM unnest(%s::text[]) AS payload",
                    (self.channel, self._payloads(keys)),
                )
                self.statements += 1
            except Exception as exc:
                extra = {"channel": self.channel, "error": type(exc).__name__}
                _log.warning("NOTIFY failed; other replicas re-read", extra=extra)
                return

    async def listen_forever(self) -> None:
        await _listen_forever(
            self._conninfo,
            self.channel,
            self.listening,
            self._on_notification,
            self._changes.notify_all_quietly,
            sender=self._sender,
        )

    def _on_notification(self, payload: str) -> None:
        replica, *keys = payload.split(" ")
        if replica == self._replica:
            return  # our own: the waiters here were woken by `notify` already
        for key in keys:
            self._changes.notify_quietly(key)

    async def close(self) -> None:
        if self._sending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sending), timeout=2)
        await self._sender.close()


async def _listen_forever(
    conninfo: str,
    channel: str,
    listening: asyncio.Event,
    on_notification: Callable[[str], None],
    catch_up: Callable[[], None],
    *,
    sender: _NotifySender,
) -> None:
    """LISTEN on `channel` with a dedicated connection, forever: `on_notification(payload)` for each notification,
    `catch_up()` each time LISTEN (re)starts (what was sent while we were not listening is lost). The connection is
    named `listener_name(channel)` so that other replicas' senders find it; `sender` learns its backend (not another
    replica's)."""
    delay = 0.2
    while True:
        try:
            connection = await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, application_name=listener_name(channel)
            )
            async with connection:
                await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                sender.own_listener_pid = connection.info.backend_pid
                listening.set()
                delay = 0.2
                catch_up()
                async for notification in connection.notifies():
                    on_notification(notification.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.warning(
                "LISTEN connection lost; reconnecting",
                extra={"channel": channel, "error": type(exc).__name__, "retry_in_s": round(delay, 2)},
            )
        finally:
            listening.clear()
        await asyncio.sleep(random.uniform(delay / 2, delay))
        delay = min(delay * 2, _RECONNECT_MAX_SECONDS)


def change_channel(engine: AsyncEngine, channel: str, changes: ChangeNotifier) -> ChangeChannel | None:
    """Cross-replica long-poll wake-ups on PostgreSQL; None on SQLite (one process: `notify` reaches every waiter)."""
    return ChangeChannel(engine, channel, changes) if is_postgresql(engine) else None


def wake_channel(engine: AsyncEngine, channel: str, signal: WakeSignal) -> PgWakeChannel | None:
    """A LISTEN/NOTIFY channel for `signal` on PostgreSQL; None on SQLite (one process: the in-process wake-up)."""
    return PgWakeChannel(engine, channel, signal) if is_postgresql(engine) else None


async def close_channels(*channels: PgWakeChannel | ChangeChannel | None) -> None:
    """Close a service's channels (None: not on PostgreSQL): their senders' connections, after pending NOTIFYs."""
    for channel in channels:
        if channel is not None:
            await channel.close()
