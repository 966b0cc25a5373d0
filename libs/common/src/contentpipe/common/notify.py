"""Cross-replica wake-ups for a work queue over PostgreSQL LISTEN/NOTIFY (SQLite: in-process only, plus polling).

A replica that queues work calls `WakeSignal.set()`: its own worker wakes at once and, through the hook installed
here, one `pg_notify(channel, replica id)` goes out after the creating transaction committed. Every other replica
listens on the channel with one dedicated psycopg connection (autocommit, outside the pool) and wakes its worker.
Delivery is best effort: a lost notification (the listener reconnecting, the database restarting) costs at most one
poll interval, and a listener that (re)connects wakes its worker once to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import psycopg
from contentpipe.common.database import is_postgresql
from contentpipe.common.ids import new_id
from contentpipe.common.workqueue import WakeSignal
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

_log = logging.getLogger("contentpipe.notify")
_RECONNECT_MAX_SECONDS = 10.0


def conninfo_for(database_url: str) -> str:
    """The libpq URI psycopg connects with, from a SQLAlchemy URL (`postgresql+psycopg://…`)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgWakeChannel:
    """LISTEN/NOTIFY for one queue's `WakeSignal`; `listen_forever` is a background loop of the service."""

    def __init__(self, engine: AsyncEngine, channel: str, signal: WakeSignal) -> None:
        if not channel.isidentifier() or len(channel) > 63:
            raise ValueError(f"invalid NOTIFY channel name {channel!r}")
        self.channel = channel
        self.name = f"listen-{channel}"
        self.listening = asyncio.Event()  # set while LISTEN is active (tests wait on it)
        self._engine = engine
        self._conninfo = conninfo_for(engine.url.render_as_string(hide_password=False))
        self._signal = signal
        self._replica = new_id()  # our own notifications come back to us: skip them
        self._sending: asyncio.Task[None] | None = None
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
                async with self._engine.connect() as connection:
                    await connection.execute(
                        text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": self.channel, "payload": self._replica},
                    )
                    await connection.commit()
            except Exception as exc:
                _log.warning(
                    "NOTIFY failed; other replicas poll", extra={"channel": self.channel, "error": type(exc).__name__}
                )
                return
            if not self._again:
                return

    async def listen_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with connection:
                    await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    delay = 0.2
                    self._signal.set_quietly()  # notifications sent while we were not listening are lost
                    async for notification in connection.notifies():
                        if notification.payload != self._replica:
                            self._signal.set_quietly()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning(
                    "LISTEN connection lost; reconnecting",
                    extra={"channel": self.channel, "error": type(exc).__name__, "retry_in_s": round(delay, 2)},
                )
            finally:
                self.listening.clear()
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, _RECONNECT_MAX_SECONDS)

    async def close(self) -> None:
        if self._sending is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sending), timeout=2)


def wake_channel(engine: AsyncEngine, channel: str, signal: WakeSignal) -> PgWakeChannel | None:
    """A LISTEN/NOTIFY channel for `signal` on PostgreSQL; None on SQLite (one process: the in-process wake-up)."""
    return PgWakeChannel(engine, channel, signal) if is_postgresql(engine) else None
