"""Connections to social accounts: platforms, profiles, and the health state machine of their tokens."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from contentpipe.oauth.domain.tokens import TokenSet


class Platform(StrEnum):
    INSTAGRAM = "instagram"
    TWITTER = "twitter"
    LINKEDIN = "linkedin"
    TIKTOK = "tiktok"
    GOOGLE = "google"
    FACEBOOK = "facebook"
    OUTBOX = "outbox"

    @classmethod
    def parse(cls, value: object) -> Platform:
        """Accepts our values, enum members of other modules (`Platform.TWITTER`) and proto names."""
        raw = str(getattr(value, "value", value)).strip().lower().removeprefix("platform_")
        if raw in ("x", "youtube"):
            raw = {"x": "twitter", "youtube": "google"}[raw]
        return cls(raw)


class ConnectionStatus(StrEnum):
    ACTIVE = "active"
    REFRESH_FAILING = "refresh_failing"  # transient refresh errors: keep trying with backoff
    NEEDS_REAUTH = "needs_reauth"  # invalid_grant / revoked at the platform: stop trying
    REVOKED = "revoked"  # revoked through contentpipe


class RefreshFailureKind(StrEnum):
    TRANSIENT = "transient"  # 5xx, timeouts, 429: try again later
    INVALID_GRANT = "invalid_grant"  # the grant is gone: the user must reconnect


@dataclass(frozen=True, slots=True)
class Profile:
    account_id: str
    username: str = ""
    display_name: str = ""
    avatar_uri: str = ""
    profile_uri: str = ""


@dataclass(frozen=True, slots=True)
class SubAccount:
    """A Facebook Page (with its own token) or an Instagram account linked to one."""

    id: str
    display_name: str
    kind: str
    access_token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class ConnectionError:
    reason: str
    message: str
    time: datetime


@dataclass(frozen=True, slots=True)
class Connection:
    id: str
    owner: str
    platform: Platform
    profile: Profile
    tokens: TokenSet
    status: ConnectionStatus = ConnectionStatus.ACTIVE
    granted_scopes: tuple[str, ...] = ()
    sub_accounts: tuple[SubAccount, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    last_refresh_at: datetime | None = None
    last_error: ConnectionError | None = None
    refresh_failures: int = 0  # consecutive transient failures
    failing_since: datetime | None = None  # first of those failures
    next_refresh_at: datetime | None = None  # earliest time the refresher may try again
    create_time: datetime | None = None
    update_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"connections/{self.id}"

    @property
    def usable(self) -> bool:
        return self.status in (ConnectionStatus.ACTIVE, ConnectionStatus.REFRESH_FAILING)


# Platforms that refuse to refresh a token younger than this: Instagram's ig_refresh_token needs a token at least
# 24 h old (refresh between day 1 and day 60).
MIN_TOKEN_AGE: dict[Platform, timedelta] = {Platform.INSTAGRAM: timedelta(hours=24)}
# A refusal this close to the minimum age is read as "too young" (clocks differ), never as a dead grant.
TOKEN_AGE_SLACK = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    margin: timedelta = timedelta(minutes=15)
    backoff_base: timedelta = timedelta(seconds=30)
    backoff_max: timedelta = timedelta(hours=1)
    give_up_after: timedelta = timedelta(days=4)  # Nango gives up after four days of failed refreshes
    # Refresh-now requests arriving together (two replicas, a retried call) share one refresh: a rotating refresh
    # token must be spent once.
    min_interval: timedelta = timedelta(seconds=2)

    min_token_age: dict[Platform, timedelta] = field(default_factory=lambda: dict(MIN_TOKEN_AGE))

    def refreshable_from(self, connection: Connection) -> datetime | None:
        """When the platform starts accepting a refresh of the current token (None: any time).

        The token was obtained at the last refresh or else at the last change of the connection (connect and
        reconnect set it): a later change only moves this later, never too early."""
        age = self.min_token_age.get(connection.platform)
        obtained = connection.last_refresh_at or connection.update_time or connection.create_time
        if age is None or obtained is None:
            return None
        return obtained + age

    def too_young(self, connection: Connection, now: datetime) -> bool:
        start = self.refreshable_from(connection)
        return start is not None and now < start

    def just_refreshed(self, connection: Connection, now: datetime) -> bool:
        last = connection.last_refresh_at
        return last is not None and now - last < self.min_interval

    def refresh_due_at(self, connection: Connection) -> datetime | None:
        """When the background refresher should renew the connection; None when it never needs to."""
        if not connection.usable or connection.tokens.expires_at is None:
            return None
        due = connection.tokens.expires_at - self.margin
        start = self.refreshable_from(connection)
        later = [t for t in (connection.next_refresh_at, start) if t is not None and t > due]
        return max(later, default=due)

    def needs_refresh(self, connection: Connection, now: datetime) -> bool:
        """Whether the access token expires within the margin (callers then refresh before using it); never
        while the platform would still refuse to refresh it."""
        expires = connection.tokens.expires_at
        return expires is not None and expires - self.margin <= now and not self.too_young(connection, now)

    def backoff(self, failures: int) -> timedelta:
        """Full-jitter exponential backoff after `failures` consecutive transient failures."""
        ceiling = min(self.backoff_max.total_seconds(), self.backoff_base.total_seconds() * 2 ** max(failures - 1, 0))
        return timedelta(seconds=max(self.backoff_base.total_seconds() / 2, random.uniform(0, ceiling)))


def refreshed(connection: Connection, tokens: TokenSet, now: datetime, **changes: object) -> Connection:
    """The connection after a successful refresh: ACTIVE, new tokens (refresh token kept when none came back)."""
    merged = tokens.merged_into(connection.tokens)
    return replace(
        connection,
        tokens=merged,
        granted_scopes=merged.scopes if merged.scopes is not None else connection.granted_scopes,
        status=ConnectionStatus.ACTIVE,
        last_refresh_at=now,
        last_error=None,
        refresh_failures=0,
        failing_since=None,
        next_refresh_at=None,
        update_time=now,
        **changes,  # type: ignore[arg-type]
    )


def refresh_failed(  # noqa: PLR0917
    connection: Connection,
    kind: RefreshFailureKind,
    reason: str,
    message: str,
    now: datetime,
    policy: RefreshPolicy,
) -> Connection:
    """The connection after a failed refresh.

    invalid_grant → NEEDS_REAUTH (stop trying). Transient → REFRESH_FAILING with a backoff; after
    `give_up_after` of failures, or once the token has expired with nothing to refresh it, NEEDS_REAUTH.
    """
    error = ConnectionError(reason=reason, message=message, time=now)
    start = policy.refreshable_from(connection)
    if start is not None and now < start + TOKEN_AGE_SLACK:
        # The platform refuses young tokens (Instagram: 24 h); whatever its error says, the grant is alive.
        return replace(
            connection,
            last_error=ConnectionError(
                reason="TOKEN_TOO_YOUNG",
                message=f"{connection.platform.value} refreshes a token only once it is old enough ({message})",
                time=now,
            ),
            next_refresh_at=start + TOKEN_AGE_SLACK,
        )
    if kind is RefreshFailureKind.INVALID_GRANT:
        return replace(
            connection,
            status=ConnectionStatus.NEEDS_REAUTH,
            last_error=error,
            next_refresh_at=None,
            update_time=now,
        )
    failures = connection.refresh_failures + 1
    failing_since = connection.failing_since or now
    if now - failing_since >= policy.give_up_after:
        return replace(
            connection,
            status=ConnectionStatus.NEEDS_REAUTH,
            last_error=ConnectionError(reason="REFRESH_GAVE_UP", message=message, time=now),
            refresh_failures=failures,
            next_refresh_at=None,
            update_time=now,
        )
    return replace(
        connection,
        status=ConnectionStatus.REFRESH_FAILING,
        last_error=error,
        refresh_failures=failures,
        failing_since=failing_since,
        next_refresh_at=now + policy.backoff(failures),
        update_time=now,
    )


def needs_reauth(connection: Connection, reason: str, message: str, now: datetime) -> Connection:
    return replace(
        connection,
        status=ConnectionStatus.NEEDS_REAUTH,
        last_error=ConnectionError(reason=reason, message=message, time=now),
        next_refresh_at=None,
        update_time=now,
    )


def reconnected(existing: Connection, fresh: Connection, now: datetime) -> Connection:
    """Reconnecting the same account updates it in place: new tokens and profile, the id and creation kept,
    and a stored refresh token never wiped by an empty one."""
    return replace(
        fresh,
        id=existing.id,
        create_time=existing.create_time,
        tokens=fresh.tokens.merged_into(existing.tokens),
        status=ConnectionStatus.ACTIVE,
        last_error=None,
        refresh_failures=0,
        failing_since=None,
        next_refresh_at=None,
        update_time=now,
    )
