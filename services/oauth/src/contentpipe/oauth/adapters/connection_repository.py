"""SQLAlchemy (Core) persistence of connections and pending authorizations; every token encrypted (TokenCipher).

The refresh lease (`lease_owner`, `lease_expires_at`) serializes refreshes of one connection across replicas:
taken with the common `claim_rows` (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite serialises writers), the row is
re-read with the lease held, and the renewed tokens are saved only while the lease is still ours (fenced).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from contentpipe.common.database import claim_rows, db_now, session_factory, statement_session_factory
from contentpipe.common.errors import Unavailable
from contentpipe.common.ids import new_id
from contentpipe.oauth.adapters.crypto import TokenCipher
from contentpipe.oauth.domain.connections import (
    Connection,
    ConnectionError,
    ConnectionStatus,
    Platform,
    Profile,
    SubAccount,
)
from contentpipe.oauth.domain.tokens import TokenSet
from contentpipe.oauth.service_layer.connections_ports import ConnectionQuery, PendingAuthorization
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = sa.MetaData()

connections = sa.Table(
    "connections",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("account_id", sa.String(256), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("profile", sa.JSON, nullable=False),
    sa.Column("granted_scopes", sa.JSON, nullable=False),
    sa.Column("access_token", sa.Text, nullable=False),  # encrypted
    sa.Column("refresh_token", sa.Text, nullable=False),  # encrypted ("" when none)
    sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("refresh_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("sub_accounts", sa.JSON, nullable=False),  # [{id, display_name, kind, access_token (encrypted)}]
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("last_refresh_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.JSON, nullable=True),
    sa.Column("refresh_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("next_refresh_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("owner", "platform", "account_id", name="uq_connections_owner_account"),
    sa.Index("ix_connections_owner_create_time", "owner", "create_time", "id"),
    sa.Index("ix_connections_refresh_due", "status", "access_expires_at"),
)

authorization_states = sa.Table(
    "authorization_states",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("redirect_uri", sa.Text, nullable=False),
    sa.Column("scopes", sa.JSON, nullable=False),
    sa.Column("code_verifier", sa.Text, nullable=False),  # encrypted ("" without PKCE)
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_authorization_states_expires_at", "expires_at"),
)

_USABLE = [ConnectionStatus.ACTIVE.value, ConnectionStatus.REFRESH_FAILING.value]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


# Read for every post (built once; see contentpipe.common.database: constant statements).
_FIND_CONNECTION = sa.select(connections).where(
    connections.c.id == sa.bindparam("b_id"), connections.c.owner == sa.bindparam("b_owner")
)


class SqlConnectionStore:
    """ConnectionStore on SQLite or PostgreSQL. Tokens are encrypted with the row id and column as context."""

    def __init__(
        self,
        engine: AsyncEngine,
        cipher: TokenCipher,
        *,
        lease_seconds: float = 60.0,
        lock_wait_seconds: float = 30.0,
    ) -> None:
        self._sessions = session_factory(engine)
        self._statements = statement_session_factory(engine)  # reads: one statement, one round trip
        self._cipher = cipher
        self._lease_seconds = lease_seconds
        self._lock_wait_seconds = lock_wait_seconds
        self._in_flight: set[asyncio.Future[None]] = set()

    async def drain(self) -> None:
        """Wait for refreshes in flight (shutdown calls this before closing the HTTP client and the engine)."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    # ------------------------------------------------------------------ mapping

    def _seal(self, connection_id: str, column: str, value: str) -> str:
        return self._cipher.encrypt(value, f"connections/{connection_id}/{column}")

    def _open(self, connection_id: str, column: str, value: str) -> str:
        return self._cipher.decrypt(value, f"connections/{connection_id}/{column}")

    def _row_values(self, c: Connection) -> dict[str, Any]:
        return {
            "owner": c.owner,
            "platform": c.platform.value,
            "account_id": c.profile.account_id,
            "status": c.status.value,
            "profile": {
                "username": c.profile.username,
                "display_name": c.profile.display_name,
                "avatar_uri": c.profile.avatar_uri,
                "profile_uri": c.profile.profile_uri,
            },
            "granted_scopes": list(c.granted_scopes),
            "access_token": self._seal(c.id, "access_token", c.tokens.access_token),
            "refresh_token": self._seal(c.id, "refresh_token", c.tokens.refresh_token),
            "access_expires_at": c.tokens.expires_at,
            "refresh_expires_at": c.tokens.refresh_expires_at,
            "sub_accounts": [
                {
                    "id": s.id,
                    "display_name": s.display_name,
                    "kind": s.kind,
                    "access_token": self._seal(c.id, f"sub_accounts/{s.id}", s.access_token),
                }
                for s in c.sub_accounts
            ],
            "metadata": dict(c.metadata),
            "last_refresh_at": c.last_refresh_at,
            "last_error": (
                {"reason": c.last_error.reason, "message": c.last_error.message, "time": c.last_error.time.isoformat()}
                if c.last_error
                else None
            ),
            "refresh_failures": c.refresh_failures,
            "failing_since": c.failing_since,
            "next_refresh_at": c.next_refresh_at,
            "update_time": c.update_time,
        }

    def _connection(self, row: Any) -> Connection:
        m = row._mapping
        cid = m["id"]
        profile = m["profile"] or {}
        error = m["last_error"]
        return Connection(
            id=cid,
            owner=m["owner"],
            platform=Platform(m["platform"]),
            status=ConnectionStatus(m["status"]),
            profile=Profile(
                account_id=m["account_id"],
                username=profile.get("username", ""),
                display_name=profile.get("display_name", ""),
                avatar_uri=profile.get("avatar_uri", ""),
                profile_uri=profile.get("profile_uri", ""),
            ),
            tokens=TokenSet(
                access_token=self._open(cid, "access_token", m["access_token"]),
                refresh_token=self._open(cid, "refresh_token", m["refresh_token"]),
                expires_at=_aware(m["access_expires_at"]),
                refresh_expires_at=_aware(m["refresh_expires_at"]),
                scopes=tuple(m["granted_scopes"] or ()),
            ),
            granted_scopes=tuple(m["granted_scopes"] or ()),
            sub_accounts=tuple(
                SubAccount(
                    id=s["id"],
                    display_name=s.get("display_name", ""),
                    kind=s.get("kind", ""),
                    access_token=self._open(cid, f"sub_accounts/{s['id']}", s.get("access_token", "")),
                )
                for s in m["sub_accounts"] or []
            ),
            metadata=dict(m["metadata"] or {}),
            last_refresh_at=_aware(m["last_refresh_at"]),
            last_error=(
                ConnectionError(
                    reason=error["reason"], message=error["message"], time=_when(error["time"]) or datetime.now(UTC)
                )
                if error
                else None
            ),
            refresh_failures=m["refresh_failures"],
            failing_since=_aware(m["failing_since"]),
            next_refresh_at=_aware(m["next_refresh_at"]),
            create_time=_aware(m["create_time"]),
            update_time=_aware(m["update_time"]),
        )

    # ------------------------------------------------------------------ pending authorizations

    async def add_pending(self, pending: PendingAuthorization) -> None:
        async with self._sessions() as session:
            now = await db_now(session)
            # Expired states are worthless: sweep them while we are here (bounded by the index).
            await session.execute(
                sa.delete(authorization_states).where(authorization_states.c.expires_at < now - timedelta(hours=1))
            )
            await session.execute(
                sa.insert(authorization_states).values(
                    id=pending.id,
                    owner=pending.owner,
                    platform=pending.platform.value,
                    redirect_uri=pending.redirect_uri,
                    scopes=list(pending.scopes),
                    code_verifier=self._cipher.encrypt(
                        pending.code_verifier or "", f"authorization_states/{pending.id}/code_verifier"
                    ),
                    expires_at=pending.expires_at,
                    create_time=now,
                )
            )
            await session.commit()

    async def get_pending(self, pending_id: str) -> PendingAuthorization | None:
        table = authorization_states
        async with self._sessions() as session:
            row = (await session.execute(sa.select(table).where(table.c.id == pending_id))).first()
        if row is None:
            return None
        m = row._mapping
        return PendingAuthorization(
            id=m["id"],
            owner=m["owner"],
            platform=Platform(m["platform"]),
            redirect_uri=m["redirect_uri"],
            scopes=tuple(m["scopes"] or ()),
            code_verifier=self._cipher.decrypt(m["code_verifier"], f"authorization_states/{m['id']}/code_verifier")
            or None,
            expires_at=_aware(m["expires_at"]) or datetime.now(UTC),
            used_at=_aware(m["used_at"]),
        )

    async def consume_pending(self, pending_id: str, now: datetime) -> bool:
        table = authorization_states
        async with self._sessions() as session:
            # Single use: only the caller whose UPDATE flips used_at from NULL wins.
            result = await session.execute(
                sa.update(table).where(table.c.id == pending_id, table.c.used_at.is_(None)).values(used_at=now)
            )
            await session.commit()
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ connections

    async def find(self, owner: str, connection_id: str) -> Connection | None:
        async with self._statements() as session:
            row = (await session.execute(_FIND_CONNECTION, {"b_id": connection_id, "b_owner": owner})).first()
        return self._connection(row) if row else None

    async def find_by_account(self, owner: str, platform: Platform, account_id: str) -> Connection | None:
        async with self._statements() as session:
            row = (
                await session.execute(
                    sa.select(connections).where(
                        connections.c.owner == owner,
                        connections.c.platform == platform.value,
                        connections.c.account_id == account_id,
                    )
                )
            ).first()
        return self._connection(row) if row else None

    async def list_connections(self, query: ConnectionQuery) -> list[Connection]:
        c = connections.c
        statement = sa.select(connections).where(c.owner == query.owner)
        if query.platform is not None:
            statement = statement.where(c.platform == query.platform.value)
        if query.status is not None:
            statement = statement.where(c.status == query.status.value)
        if query.after is not None:
            time_, id_ = query.after
            statement = statement.where(sa.or_(c.create_time < time_, sa.and_(c.create_time == time_, c.id < id_)))
        statement = statement.order_by(c.create_time.desc(), c.id.desc()).limit(query.limit)
        async with self._statements() as session:
            rows = (await session.execute(statement)).all()
        return [self._connection(r) for r in rows]

    async def save(self, connection: Connection) -> Connection:
        """Update the row with this id, or insert it; a concurrent insert of the same account wins once and the
        loser updates that row in place (reconnects never duplicate an account)."""
        async with self._sessions() as session:
            now = await db_now(session)
            values = self._row_values(connection)
            values["update_time"] = connection.update_time or now
            result = await session.execute(
                sa.update(connections)
                .where(connections.c.id == connection.id, connections.c.owner == connection.owner)
                .values(values)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                try:
                    await session.execute(
                        sa.insert(connections).values(
                            id=connection.id, create_time=connection.create_time or now, **values
                        )
                    )
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    existing = await self.find_by_account(
                        connection.owner, connection.platform, connection.profile.account_id
                    )
                    if existing is None:
                        raise
                    return await self.save(replace(connection, id=existing.id, create_time=existing.create_time))
            else:
                await session.commit()
        saved = await self.find(connection.owner, connection.id)
        assert saved is not None
        return saved

    async def delete(self, owner: str, connection_id: str) -> bool:
        async with self._sessions() as session:
            result = await session.execute(
                sa.delete(connections).where(connections.c.id == connection_id, connections.c.owner == owner)
            )
            await session.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ refresh lease

    async def _try_lease(self, owner: str, connection_id: str, holder: str) -> Connection | bool | None:
        """The re-read row if we took the lease; False when someone else holds it; None when not found."""
        async with self._sessions() as session:
            now = await db_now(session)
            rows = await claim_rows(
                session,
                connections,
                where=[connections.c.id == connection_id, connections.c.owner == owner],
                order_by=[connections.c.id],
                limit=1,
                lease_owner=holder,
                lease_seconds=self._lease_seconds,
                now=now,
            )
            await session.commit()
            if rows:
                return self._connection(rows[0])
            exists = (
                await session.execute(
                    sa.select(connections.c.id).where(connections.c.id == connection_id, connections.c.owner == owner)
                )
            ).first()
        return False if exists else None

    async def with_refresh_lock(
        self,
        owner: str,
        connection_id: str,
        work: Callable[[Connection], Awaitable[Connection | None]],
        *,
        wait: bool = True,
    ) -> Connection | None:
        holder = new_id()
        deadline = time.monotonic() + self._lock_wait_seconds
        delay = 0.05
        while True:
            leased = await self._try_lease(owner, connection_id, holder)
            if leased is None:
                return None
            if leased is not False:
                assert isinstance(leased, Connection)
                # A refresh that reached the platform must be saved even if we are cancelled (shutdown, a client
                # gone): a rotated refresh token lost here would leave the spent one in the row.
                held = asyncio.ensure_future(self._work_and_release(leased, holder, work))
                self._in_flight.add(held)
                held.add_done_callback(self._in_flight.discard)
                try:
                    await asyncio.shield(held)
                except asyncio.CancelledError:
                    await asyncio.wait([held])
                    raise
                return await self.find(owner, connection_id)
            if not wait:
                return await self.find(owner, connection_id)
            if time.monotonic() >= deadline:
                raise Unavailable(
                    "the connection is being refreshed; try again", reason="REFRESH_IN_PROGRESS", retry_after=1
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _work_and_release(
        self, leased: Connection, holder: str, work: Callable[[Connection], Awaitable[Connection | None]]
    ) -> None:
        try:
            changed = await work(leased)
            if changed is not None:
                await self._save_fenced(changed, holder)
        finally:
            await self.release(leased.id, holder)

    async def _save_fenced(self, connection: Connection, holder: str) -> None:
        async with self._sessions() as session:
            values = self._row_values(connection)
            values["update_time"] = connection.update_time or await db_now(session)
            result = await session.execute(
                sa.update(connections)
                .where(connections.c.id == connection.id, connections.c.lease_owner == holder)
                .values(values)
            )
            await session.commit()
        if result.rowcount != 1:  # type: ignore[attr-defined]
            # Our lease lapsed (a refresh slower than the lease): the newest tokens may be lost. Never silent.
            raise Unavailable(
                "refresh lease lost before saving; the connection will be refreshed again", reason="REFRESH_LEASE_LOST"
            )

    async def due_for_refresh(
        self, now: datetime, margin_until: datetime, limit: int, platforms: Sequence[Platform]
    ) -> list[tuple[str, str]]:
        """(owner, id) of usable connections whose token expires before `margin_until`, retry time reached and
        not leased right now; soonest expiry first. The caller takes each one's lease before refreshing."""
        c = connections.c
        statement = (
            sa.select(c.owner, c.id)
            .where(
                c.status.in_(_USABLE),
                c.platform.in_([p.value for p in platforms]),
                c.access_expires_at.is_not(None),
                c.access_expires_at <= margin_until,
                sa.or_(c.next_refresh_at.is_(None), c.next_refresh_at <= now),
                sa.or_(c.lease_expires_at.is_(None), c.lease_expires_at <= now),
            )
            .order_by(c.access_expires_at)
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = (await session.execute(statement)).all()
        return [(r[0], r[1]) for r in rows]

    async def release(self, connection_id: str, owner_id: str) -> None:
        async with self._sessions() as session:
            await session.execute(
                sa.update(connections)
                .where(connections.c.id == connection_id, connections.c.lease_owner == owner_id)
                .values(lease_owner=None, lease_expires_at=None)
            )
            await session.commit()

    # ------------------------------------------------------------------ key rotation

    async def rotate_keys(self, batch: int = 200) -> int:
        """Re-encrypt every token and verifier under the first key; returns the rows rewritten."""
        rewritten = 0
        async with self._sessions() as session:
            ids = [r[0] for r in (await session.execute(sa.select(connections.c.id))).all()]
        for cid in ids:
            async with self._sessions() as session:
                row = (
                    await session.execute(sa.select(connections).where(connections.c.id == cid).with_for_update())
                ).first()
                if row is None:
                    continue
                m = row._mapping
                values: dict[str, Any] = {}
                for column in ("access_token", "refresh_token"):
                    if self._cipher.needs_rotation(m[column]):
                        values[column] = self._seal(cid, column, self._open(cid, column, m[column]))
                subs = m["sub_accounts"] or []
                if any(self._cipher.needs_rotation(s.get("access_token", "")) for s in subs):
                    values["sub_accounts"] = [
                        {
                            **s,
                            "access_token": self._seal(
                                cid,
                                f"sub_accounts/{s['id']}",
                                self._open(cid, f"sub_accounts/{s['id']}", s.get("access_token", "")),
                            ),
                        }
                        for s in subs
                    ]
                if values:
                    await session.execute(sa.update(connections).where(connections.c.id == cid).values(values))
                    rewritten += 1
                await session.commit()
        async with self._sessions() as session:
            states = (
                await session.execute(sa.select(authorization_states.c.id, authorization_states.c.code_verifier))
            ).all()
            for sid, verifier in states:
                if self._cipher.needs_rotation(verifier):
                    context = f"authorization_states/{sid}/code_verifier"
                    await session.execute(
                        sa.update(authorization_states)
                        .where(authorization_states.c.id == sid)
                        .values(code_verifier=self._cipher.encrypt(self._cipher.decrypt(verifier, context), context))
                    )
                    rewritten += 1
            await session.commit()
        return rewritten
