"""SQLAlchemy (Core) persistence of the posting queue: posts with worker leases, and shared rate-limit blocks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from contentpipe.common.batches import WriteBatcher, fenced_saves
from contentpipe.common.database import (
    claim_rows,
    db_now,
    insert_row,
    is_postgresql,
    lease_values,
    renew_rows,
    session_factory,
    sql_now,
    statement_session_factory,
)
from contentpipe.common.workqueue import Lease
from contentpipe.oauth.domain.posts import (
    NEW_ATTEMPT_FROM,
    NEW_ATTEMPT_STATE,
    WORK_STATES,
    Media,
    Platform,
    Post,
    PostError,
    PostOptions,
    PostState,
)
from contentpipe.oauth.service_layer.posting_ports import Added, ListQuery, PostIdTaken
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = sa.MetaData()

posts = sa.Table(
    "posts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("trace_context", sa.JSON, nullable=True),
    sa.Column("connection_id", sa.String(128), nullable=False),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("account_id", sa.String(256), nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("media", sa.JSON, nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("publish_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("platform_post_id", sa.String(256), nullable=False, server_default=""),
    sa.Column("permalink", sa.Text, nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("reconcile_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.JSON, nullable=True),
    sa.Column("progress", sa.JSON, nullable=False),
    sa.Column("create_sent_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lease_owner", sa.String(128), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("owner", "request_id", name="uq_posts_owner_request_id"),
    sa.Index("ix_posts_owner_create_time", "owner", "create_time", "id"),
    sa.Index("ix_posts_due", "state", "next_attempt_time"),
    sa.Index("ix_posts_account_published", "platform", "account_id", "published_time"),
)

posting_rate_limits = sa.Table(
    "posting_rate_limits",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.String(300), nullable=False, server_default=""),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
)

_WORK_STATES = [state.value for state in WORK_STATES]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# What a save writes (`_mutable`).
_MUTABLE_COLUMNS = (
    "state",
    "platform_post_id",
    "permalink",
    "attempts",
    "reconcile_attempts",
    "last_error",
    "progress",
    "create_sent_time",
    "update_time",
    "published_time",
    "next_attempt_time",
)


def _mutable(post: Post, now: datetime) -> dict[str, Any]:
    return {
        "state": post.state.value,
        "platform_post_id": post.platform_post_id,
        "permalink": post.permalink,
        "attempts": post.attempts,
        "reconcile_attempts": post.reconcile_attempts,
        "last_error": post.last_error.to_dict() if post.last_error else None,
        "progress": post.progress,
        "create_sent_time": post.create_sent_time,
        "update_time": post.update_time or now,
        "published_time": post.published_time,
        "next_attempt_time": post.next_attempt_time,
    }


def _from_row(row: Any) -> Post:
    return Post(
        id=row.id,
        owner=row.owner,
        connection_id=row.connection_id,
        platform=Platform(row.platform),
        text=row.text,
        media=tuple(Media.from_dict(m) for m in row.media or []),
        options=PostOptions.from_dict(row.options or {}),
        create_time=_aware(row.create_time),  # type: ignore[arg-type]
        publish_time=_aware(row.publish_time),
        request_id=row.request_id or "",
        trace_context=dict(row.trace_context or {}),
        account_id=row.account_id or "",
        state=PostState(row.state),
        platform_post_id=row.platform_post_id or "",
        permalink=row.permalink or "",
        attempts=int(row.attempts),
        last_error=PostError.from_dict(row.last_error) if row.last_error else None,
        update_time=_aware(row.update_time),
        published_time=_aware(row.published_time),
        next_attempt_time=_aware(row.next_attempt_time),
        create_sent_time=_aware(row.create_sent_time),
        progress=dict(row.progress or {}),
        reconcile_attempts=int(row.reconcile_attempts),
    )


# The statements of every post, built once (see contentpipe.common.database: constant statements).
_GET_POST = sa.select(posts).where(posts.c.id == sa.bindparam("b_id"))
# Workers' saves of posts, many in one statement on PostgreSQL (`WriteBatcher`).
_SAVE_POSTS = fenced_saves(posts, _MUTABLE_COLUMNS)


class SqlPostRepository:
    """Each method is one short transaction. Worker saves are fenced by a live lease, API updates by no lease."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)
        self._statements = statement_session_factory(engine)  # one statement, one round trip
        self._postgresql = is_postgresql(engine)
        # Posts published together are saved together: one statement, and one commit, for all of them.
        self._saves = WriteBatcher(self._write_saves, name="oauth-post-saves")

    async def add(self, post: Post, lease: Lease | None = None) -> Added:
        values: dict[str, Any] = {
            "id": post.id,
            "owner": post.owner,
            "request_id": post.request_id or None,
            "trace_context": post.trace_context or None,
            "connection_id": post.connection_id,
            "platform": post.platform.value,
            "account_id": post.account_id,
            "text": post.text,
            "media": [m.to_dict() for m in post.media],
            "options": post.options.to_dict(),
            "publish_time": post.publish_time,
            "create_time": post.create_time,
            **_mutable(post, post.create_time),
        }
        if lease is not None:
            values.update(lease_values(lease.owner, lease.seconds, self._postgresql))
        try:
            async with self._statements() as session:
                await session.execute(insert_row(posts, self._postgresql, lease is not None), values)
        except IntegrityError:
            # Looked up only after a conflict: a create that goes through is one INSERT. The request id first: a
            # retried create gets its post even when it now names another id (AIP-155 before AIP-133).
            existing = await self.find_by_request(post.owner, post.request_id) if post.request_id else None
            if existing is not None:
                return Added(existing, created=False)
            if await self._exists(post.id):
                raise PostIdTaken(post.id) from None
            raise
        return Added(post, created=True)

    async def _exists(self, post_id: str) -> bool:
        async with self._statements() as session:
            found = await session.scalar(sa.select(posts.c.id).where(posts.c.id == post_id))
        return found is not None

    async def get(self, post_id: str) -> Post | None:
        async with self._statements() as session:
            row = (await session.execute(_GET_POST, {"b_id": post_id})).first()
        return _from_row(row) if row is not None else None

    async def queue_stats(self) -> tuple[int, datetime | None]:
        c = posts.c
        async with self._statements() as session:
            row = (
                await session.execute(
                    sa.select(sa.func.count(), sa.func.min(c.create_time)).where(c.state == PostState.QUEUED.value)
                )
            ).one()
        return int(row[0]), _aware(row[1])

    async def find_by_request(self, owner: str, request_id: str) -> Post | None:
        async with self._statements() as session:
            row = (
                await session.execute(sa.select(posts).where(posts.c.owner == owner, posts.c.request_id == request_id))
            ).first()
        return _from_row(row) if row is not None else None

    async def page(self, query: ListQuery) -> list[Post]:
        c = posts.c
        statement = sa.select(posts).where(c.owner == query.owner)
        if query.state is not None:
            statement = statement.where(c.state == query.state.value)
        if query.platform is not None:
            statement = statement.where(c.platform == query.platform.value)
        if query.connection_id is not None:
            statement = statement.where(c.connection_id == query.connection_id)
        if query.after is not None:
            time, last_id = query.after
            statement = statement.where(sa.or_(c.create_time < time, sa.and_(c.create_time == time, c.id < last_id)))
        statement = statement.order_by(c.create_time.desc(), c.id.desc()).limit(query.limit)
        async with self._statements() as session:
            rows = (await session.execute(statement)).all()
        return [_from_row(row) for row in rows]

    async def update_unleased(self, post: Post, expected: PostState) -> bool:
        """An API-side change (cancel, resolve): only while no worker holds a live lease on the row."""
        c = posts.c
        async with self._sessions.begin() as session:
            now = await db_now(session)
            result = await session.execute(
                sa.update(posts)
                .where(
                    c.id == post.id,
                    c.state == expected.value,
                    sa.or_(c.lease_expires_at.is_(None), c.lease_expires_at <= now),
                )
                .values(**_mutable(post, now), lease_owner=None, lease_expires_at=None)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Post]:
        c = posts.c
        new_attempt = c.state == NEW_ATTEMPT_FROM.value
        async with self._statements() as session:
            now = sql_now(session)
            rows = await claim_rows(
                session,
                posts,
                where=[c.state.in_(_WORK_STATES), c.next_attempt_time.is_not(None), c.next_attempt_time <= now],
                order_by=[c.next_attempt_time, c.id],
                limit=limit,
                lease_owner=worker_id,
                lease_seconds=lease_seconds,
                now=now,
                # The attempt starts with the lease (Post.start_attempt), so the worker has no save of its own to make
                # before publishing.
                values={
                    "state": sa.case((new_attempt, NEW_ATTEMPT_STATE.value), else_=c.state),
                    "attempts": sa.case((new_attempt, c.attempts + 1), else_=c.attempts),
                    "update_time": now,
                },
            )
        return [_from_row(row) for row in rows]

    async def save(self, post: Post, worker_id: str, *, release: bool = False) -> bool:
        """Fenced: only while `worker_id` still holds a live lease (a stalled worker cannot overwrite a taker)."""
        return await self._saves.submit((post, worker_id, release))

    async def _write_saves(self, saves: list[tuple[Post, str, bool]]) -> list[bool]:
        now = datetime.now(UTC)
        rows = [_SAVE_POSTS.row(post.id, owner, _mutable(post, now), release=release) for post, owner, release in saves]
        # SQLite: one transaction for several (one writer at a time).
        async with self._statements() if self._postgresql or len(saves) == 1 else self._sessions.begin() as session:
            return await _SAVE_POSTS.write(session, rows)

    async def renew(self, worker_id: str, ids: Sequence[str], lease_seconds: float) -> set[str]:
        async with self._statements() as session:
            held: set[str] = await renew_rows(session, posts, ids, lease_owner=worker_id, lease_seconds=lease_seconds)
        return held

    async def release(self, worker_id: str, ids: Sequence[str] | None = None) -> None:
        c = posts.c
        statement = sa.update(posts).where(c.lease_owner == worker_id)
        if ids is not None:
            if not ids:
                return
            statement = statement.where(c.id.in_(ids))
        async with self._statements() as session:
            await session.execute(statement.values(lease_owner=None, lease_expires_at=None))

    async def count_recent(
        self, platform: Platform, account_id: str, since: datetime, exclude: str
    ) -> tuple[int, datetime | None]:
        """Posts of one account that went out (or may have) since `since`: published, in flight, unconfirmed."""
        c = posts.c
        when = sa.func.coalesce(c.published_time, c.create_sent_time)
        statement = sa.select(sa.func.count(), sa.func.min(when)).where(
            c.platform == platform.value,
            c.account_id == account_id,
            c.id != exclude,
            when >= since,
            c.state.in_([PostState.PUBLISHED.value, PostState.PUBLISHING.value, PostState.UNCONFIRMED.value]),
        )
        async with self._statements() as session:
            count, oldest = (await session.execute(statement)).one()
        if isinstance(oldest, str):  # SQLite returns min() of a DateTime column as text
            oldest = datetime.fromisoformat(oldest)
        return int(count), _aware(oldest)


class SqlRateLimitStore:
    """Rate-limit blocks shared by every replica: `twitter:account:123` until its reset, `facebook:app` ..."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = session_factory(engine)
        self._statements = statement_session_factory(engine)  # one statement, one round trip

    async def block(self, key: str, until: datetime, reason: str) -> None:
        t = posting_rate_limits
        async with self._sessions.begin() as session:
            now = await db_now(session)
            values = {"key": key, "blocked_until": until, "reason": reason[:300], "update_time": now}
            if is_postgresql(session):
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                pg = pg_insert(t).values(values)
                statement: Any = pg.on_conflict_do_update(
                    index_elements=[t.c.key],
                    set_={
                        "blocked_until": sa.func.greatest(t.c.blocked_until, pg.excluded.blocked_until),
                        "reason": pg.excluded.reason,
                        "update_time": pg.excluded.update_time,
                    },
                )
            else:
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                lite = sqlite_insert(t).values(values)
                statement = lite.on_conflict_do_update(
                    index_elements=[t.c.key],
                    set_={
                        "blocked_until": sa.func.max(t.c.blocked_until, lite.excluded.blocked_until),
                        "reason": lite.excluded.reason,
                        "update_time": lite.excluded.update_time,
                    },
                )
            await session.execute(statement)

    async def blocked(self, keys: Sequence[str], now: datetime) -> tuple[str, datetime, str] | None:
        t = posting_rate_limits
        async with self._statements() as session:
            rows = (await session.execute(sa.select(t).where(t.c.key.in_(list(keys))))).all()
        latest: tuple[str, datetime, str] | None = None
        for row in rows:
            until = _aware(row.blocked_until)
            if isinstance(until, str):
                until = _aware(datetime.fromisoformat(until))
            assert until is not None
            if until > now and (latest is None or until > latest[1]):
                latest = (row.key, until, row.reason)
        return latest
