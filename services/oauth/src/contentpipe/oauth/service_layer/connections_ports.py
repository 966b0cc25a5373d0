"""Ports the connections use case needs: one OAuth client per platform, and the connection store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from contentpipe.oauth.domain.connections import (
    Connection,
    ConnectionStatus,
    Platform,
    Profile,
    RefreshFailureKind,
    SubAccount,
)
from contentpipe.oauth.domain.tokens import TokenSet


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    platform: Platform
    display_name: str
    required_scopes: tuple[str, ...]
    uses_pkce: bool
    supports_refresh: bool
    supports_revoke: bool


@dataclass(frozen=True, slots=True)
class Grant:
    """What a completed authorization (code exchange plus follow-ups and profile) produced."""

    tokens: TokenSet
    profile: Profile
    granted_scopes: tuple[str, ...] | None  # None: the platform does not report them
    sub_accounts: tuple[SubAccount, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Renewal:
    tokens: TokenSet
    sub_accounts: tuple[SubAccount, ...] | None = None  # None: unchanged


class PlatformCallError(Exception):
    """A platform call failed. `message` is for people and never contains a token."""

    def __init__(self, kind: RefreshFailureKind, reason: str, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class PlatformClient(Protocol):
    spec: PlatformSpec

    def authorization_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None
    ) -> str: ...

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None) -> Grant: ...

    async def refresh(self, connection: Connection) -> Renewal:
        """Renew the tokens (refresh grant, or the platform's re-exchange). Raises PlatformCallError."""
        ...

    async def revoke(self, connection: Connection) -> None:
        """Revoke at the platform. Raises PlatformCallError (reason REVOKE_UNSUPPORTED where impossible)."""
        ...


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """A started authorization: what `state` refers to. The PKCE verifier is encrypted by the store."""

    id: str
    owner: str
    platform: Platform
    redirect_uri: str
    scopes: tuple[str, ...]
    code_verifier: str | None = field(repr=False)
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConnectionQuery:
    owner: str
    platform: Platform | None = None
    status: ConnectionStatus | None = None
    after: tuple[datetime, str] | None = None  # (create_time, id) of the last row of the previous page
    limit: int = 50


class ConnectionStore(Protocol):
    async def add_pending(self, pending: PendingAuthorization) -> None: ...

    async def get_pending(self, pending_id: str) -> PendingAuthorization | None: ...

    async def consume_pending(self, pending_id: str, now: datetime) -> bool:
        """Mark it used; True only for the one caller that did (single use under concurrency)."""
        ...

    async def find(self, owner: str, connection_id: str) -> Connection | None: ...

    async def find_by_account(self, owner: str, platform: Platform, account_id: str) -> Connection | None: ...

    async def list_connections(self, query: ConnectionQuery) -> list[Connection]: ...

    async def save(self, connection: Connection) -> Connection:
        """Insert or update by id (or by owner+platform+account for a new id that races a reconnect)."""
        ...

    async def delete(self, owner: str, connection_id: str) -> bool: ...

    async def with_refresh_lock(
        self,
        owner: str,
        connection_id: str,
        work: Callable[[Connection], Awaitable[Connection | None]],
        *,
        wait: bool = True,
    ) -> Connection | None:
        """Run `work` on the freshly re-read row while holding the connection's refresh lease (one holder across
        replicas) and save what it returns (fenced by the lease). While another holder has it: wait (bounded) and
        retry, or with `wait=False` skip `work`. Returns the row as it then is; None when not found."""
        ...

    async def due_for_refresh(
        self, now: datetime, margin_until: datetime, limit: int, platforms: Sequence[Platform]
    ) -> list[tuple[str, str]]:
        """(owner, id) of usable connections on `platforms` expiring before `margin_until` whose retry time has
        come and that nobody is refreshing right now."""
        ...
