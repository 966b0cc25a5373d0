"""Connection use cases: start/complete an authorization, read, list, refresh, delete; the TokenProvider that
posting uses; and the background refresher. One refresh per connection at a time (the store's refresh lease)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

from contentpipe.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from contentpipe.common.ids import new_id
from contentpipe.oauth.domain.connections import (
    Connection,
    ConnectionStatus,
    Platform,
    Profile,
    RefreshFailureKind,
    RefreshPolicy,
    needs_reauth,
    reconnected,
    refresh_failed,
    refreshed,
)
from contentpipe.oauth.domain.connections_state import STATE_TTL, StateSigner, code_challenge, new_code_verifier
from contentpipe.oauth.domain.tokens import TokenSet
from contentpipe.oauth.service_layer.connections_ports import (
    ConnectionQuery,
    ConnectionStore,
    PendingAuthorization,
    PlatformCallError,
    PlatformClient,
    PlatformSpec,
)
from contentpipe.oauth.service_layer.metrics import OAuthMetrics, default_metrics
from contentpipe.oauth.service_layer.tokens import (
    CONNECTION_NEEDS_REAUTH,
    CONNECTION_NOT_FOUND,
    CONNECTION_REVOKED,
    ConnectionCredentials,
    ConnectionSummary,
    SubAccountCredentials,
)

_log = logging.getLogger(__name__)

MAX_EXTRA_SCOPES = 20
OUTBOX_SPEC = PlatformSpec(Platform.OUTBOX, "Outbox (local folder)", (), False, False, False)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class StartedAuthorization:
    authorization_uri: str
    state: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class DeleteOutcome:
    revoked_at_platform: bool
    revoke_error: str


@dataclass(frozen=True, slots=True)
class ConnectionPage:
    connections: list[Connection]
    next_after: tuple[datetime, str] | None


@dataclass(frozen=True, slots=True)
class RedirectAllowlist:
    exact: tuple[str, ...]
    prefixes: tuple[str, ...]

    def allows(self, uri: str) -> bool:
        try:
            parts = urlsplit(uri)
            parts.port  # noqa: B018  # raises ValueError for a malformed port
        except ValueError:  # e.g. "http://[not-an-ip]/"
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            return False
        return uri in self.exact or any(uri.startswith(prefix) for prefix in self.prefixes)


class ConnectionService:
    """The connections use cases; also implements `TokenProvider` for posting."""

    def __init__(
        self,
        store: ConnectionStore,
        clients: Mapping[Platform, PlatformClient],
        signer: StateSigner,
        allowlist: RedirectAllowlist,
        *,
        policy: RefreshPolicy | None = None,
        outbox_dir: str = "",
        clock: Callable[[], datetime] = _utcnow,
        metrics: OAuthMetrics | None = None,
        hosted_redirect_uri: str | None = None,
    ) -> None:
        self._hosted_redirect_uri = hosted_redirect_uri
        self._metrics = metrics if metrics is not None else default_metrics()
        self._store = store
        self._clients = dict(clients)
        self._signer = signer
        self._allowlist = allowlist
        self._policy = policy or RefreshPolicy()
        self._outbox_dir = outbox_dir
        self._now = clock

    # ------------------------------------------------------------------ platforms

    def platforms(self) -> list[PlatformSpec]:
        return [*(client.spec for client in self._clients.values()), OUTBOX_SPEC]

    def _client(self, platform: Platform, field: str = "platform") -> PlatformClient:
        client = self._clients.get(platform)
        if client is None:
            raise FailedPrecondition(
                f"{platform.value} is not configured in this deployment (no client credentials)",
                reason="PLATFORM_NOT_CONFIGURED",
                metadata={"platform": platform.value},
            )
        return client

    # ------------------------------------------------------------------ authorization

    async def start(
        self, owner: str, platform: Platform | None, redirect_uri: str, extra_scopes: Sequence[str]
    ) -> StartedAuthorization:
        violations: list[FieldViolation] = []
        if platform is None:
            violations.append(FieldViolation("platform", "required"))
        elif platform is Platform.OUTBOX:
            violations.append(
                FieldViolation("platform", "outbox needs no authorization: call CompleteConnection with it")
            )
        redirect_uri = redirect_uri or self._hosted_redirect_uri or ""
        if not redirect_uri:
            violations.append(
                FieldViolation("redirect_uri", "required (this deployment has no hosted callback: OAUTH_CALLBACK_URL)")
            )
        elif not self._allowlist.allows(redirect_uri):
            violations.append(
                FieldViolation("redirect_uri", "not on this deployment's allowlist (OAUTH_REDIRECT_URIS)")
            )
        if len(extra_scopes) > MAX_EXTRA_SCOPES:
            violations.append(FieldViolation("extra_scopes", f"at most {MAX_EXTRA_SCOPES}"))
        for i, scope in enumerate(extra_scopes):
            if not scope or not scope.isprintable() or any(c.isspace() or c == "," for c in scope) or len(scope) > 200:
                violations.append(FieldViolation(f"extra_scopes[{i}]", "a scope is one token without spaces or commas"))
        if violations:
            raise _invalid(violations)
        assert platform is not None
        client = self._client(platform)
        scopes = tuple(dict.fromkeys([*client.spec.required_scopes, *extra_scopes]))
        verifier = new_code_verifier() if client.spec.uses_pkce else None
        now = self._now()
        expires_at = (now + STATE_TTL).replace(microsecond=0)
        state_id = new_id()
        state = self._signer.sign(state_id, expires_at, owner, platform.value, redirect_uri)
        await self._store.add_pending(
            PendingAuthorization(
                id=state_id,
                owner=owner,
                platform=platform,
                redirect_uri=redirect_uri,
                scopes=scopes,
                code_verifier=verifier,
                expires_at=expires_at,
            )
        )
        uri = client.authorization_url(
            redirect_uri=redirect_uri,
            state=state,
            scopes=scopes,
            code_challenge=code_challenge(verifier) if verifier else None,
        )
        return StartedAuthorization(authorization_uri=uri, state=state, expires_at=expires_at)

    async def _check_state(self, owner: str, platform: Platform, state: str) -> PendingAuthorization:
        invalid = InvalidArgument.single("state", "not a state this service issued, or altered", reason="STATE_INVALID")
        pending = await self.pending_for_state(state)
        if pending is None:
            raise invalid
        if pending.owner != owner:
            raise InvalidArgument.single("state", "issued to another user", reason="STATE_USER_MISMATCH")
        if pending.platform is not platform:
            raise InvalidArgument.single(
                "platform", f"state was issued for {pending.platform.value}", reason="STATE_PLATFORM_MISMATCH"
            )
        now = self._now()
        if pending.used_at is not None:
            raise FailedPrecondition("state was already used; start the connection again", reason="STATE_ALREADY_USED")
        if pending.expires_at <= now:
            raise FailedPrecondition("state expired; start the connection again", reason="STATE_EXPIRED")
        if not await self._store.consume_pending(pending.id, now):
            raise FailedPrecondition("state was already used; start the connection again", reason="STATE_ALREADY_USED")
        return pending

    async def pending_for_state(self, state: str) -> PendingAuthorization | None:
        """The authorization a state belongs to when this service issued it unaltered (used or not), else None."""
        parsed = self._signer.parse(state)
        pending = await self._store.get_pending(parsed.id) if parsed is not None else None
        if parsed is None or pending is None or pending.expires_at != parsed.expires_at:
            return None
        if not self._signer.verify(parsed, pending.owner, pending.platform.value, pending.redirect_uri):
            return None
        return pending

    async def complete_redirect(self, state: str, code: str) -> Connection:
        """The hosted callback: the state identifies who started the connection, then `complete` as for them."""
        pending = await self.pending_for_state(state)
        if pending is None:
            raise InvalidArgument.single("state", "not a state this service issued, or altered", reason="STATE_INVALID")
        return await self.complete(pending.owner, pending.platform, code, state)

    async def complete(self, owner: str, platform: Platform | None, code: str, state: str) -> Connection:
        if platform is None:
            raise InvalidArgument.single("platform", "required")
        if platform is Platform.OUTBOX:
            return await self._connect_outbox(owner)
        violations = [FieldViolation(f, "required") for f, v in (("code", code), ("state", state)) if not v]
        if violations:
            raise _invalid(violations)
        client = self._client(platform)
        pending = await self._check_state(owner, platform, state)
        try:
            grant = await client.exchange_code(
                code=code, redirect_uri=pending.redirect_uri, code_verifier=pending.code_verifier
            )
        except PlatformCallError as exc:
            raise _as_error(exc, "CODE_EXCHANGE_FAILED") from None
        required = set(client.spec.required_scopes)
        granted = set(grant.granted_scopes) if grant.granted_scopes is not None else set(pending.scopes)
        missing = sorted(required - granted)
        if missing:
            raise FailedPrecondition(
                f"the account did not grant the required scopes: {' '.join(missing)}; connect again and allow them",
                reason="SCOPES_MISSING",
                metadata={"missing_scopes": " ".join(missing)},
            )
        if not grant.profile.account_id:
            raise Unavailable(f"{platform.value} returned no account id", reason="PLATFORM_BAD_RESPONSE")
        now = self._now()
        fresh = Connection(
            id=new_id(),
            owner=owner,
            platform=platform,
            profile=grant.profile,
            tokens=replace(grant.tokens, scopes=tuple(sorted(granted))),
            granted_scopes=tuple(sorted(granted)),
            sub_accounts=grant.sub_accounts,
            metadata=dict(grant.metadata),
            create_time=now,
            update_time=now,
        )
        existing = await self._store.find_by_account(owner, platform, grant.profile.account_id)
        if existing is not None:
            fresh = reconnected(existing, fresh, now)
        connection = await self._store.save(fresh)
        _log.info(
            "connection completed",
            extra={"connection": connection.name, "platform": platform.value, "reconnect": existing is not None},
        )
        return connection

    async def _connect_outbox(self, owner: str) -> Connection:
        existing = await self._store.find_by_account(owner, Platform.OUTBOX, owner)
        if existing is not None:
            return existing
        now = self._now()
        return await self._store.save(
            Connection(
                id=new_id(),
                owner=owner,
                platform=Platform.OUTBOX,
                profile=Profile(account_id=owner, username="outbox", display_name="Outbox"),
                tokens=TokenSet(access_token=""),
                metadata={"outbox_dir": self._outbox_dir} if self._outbox_dir else {},
                create_time=now,
                update_time=now,
            )
        )

    # ------------------------------------------------------------------ reads

    async def get(self, owner: str, connection_id: str) -> Connection:
        connection = await self._store.find(owner, connection_id)
        if connection is None:
            raise NotFound(f"connection connections/{connection_id} not found", reason=CONNECTION_NOT_FOUND)
        return connection

    async def list_page(
        self,
        owner: str,
        *,
        platform: Platform | None,
        status: ConnectionStatus | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> ConnectionPage:
        rows = await self._store.list_connections(
            ConnectionQuery(owner=owner, platform=platform, status=status, after=after, limit=limit + 1)
        )
        page = rows[:limit]
        more = len(rows) > limit and page
        last = page[-1] if more else None
        return ConnectionPage(
            connections=page,
            next_after=(last.create_time, last.id) if last is not None and last.create_time else None,
        )

    # ------------------------------------------------------------------ delete

    async def delete(self, owner: str, connection_id: str) -> DeleteOutcome:
        connection = await self.get(owner, connection_id)
        revoked, error = False, ""
        if connection.platform is Platform.OUTBOX:
            error = "the outbox has no tokens to revoke"
        elif (client := self._clients.get(connection.platform)) is None:
            error = f"{connection.platform.value} is no longer configured; revoke the app at the platform"
        elif not client.spec.supports_revoke:
            error = f"{client.spec.display_name} has no revoke endpoint; remove the app in the account's settings"
        else:
            try:
                await client.revoke(connection)
                revoked = True
            except PlatformCallError as exc:
                error = exc.message
        await self._store.delete(owner, connection_id)
        _log.info(
            "connection deleted",
            extra={"connection": connection.name, "revoked_at_platform": revoked, "revoke_error": error},
        )
        return DeleteOutcome(revoked_at_platform=revoked, revoke_error=error)

    # ------------------------------------------------------------------ refresh

    async def refresh_now(self, owner: str, connection_id: str) -> Connection:
        """RefreshConnection: one refresh now (unless another one finished while we waited for the lease)."""
        connection = await self.get(owner, connection_id)
        self._require_usable(connection)
        if connection.platform is Platform.OUTBOX:
            raise FailedPrecondition("the outbox has no tokens to refresh", reason="REFRESH_UNSUPPORTED")
        start = self._policy.refreshable_from(connection)
        if start is not None and self._now() < start:
            raise FailedPrecondition(
                f"{connection.platform.value} refreshes a token only once it is "
                f"{self._policy.min_token_age[connection.platform].total_seconds() / 3600:g} h old: this one can be "
                f"refreshed from {start.isoformat(timespec='seconds')} (it stays valid until then)",
                reason="TOKEN_TOO_YOUNG",
                metadata={"connection": connection.name},
            )
        return await self._renew(connection, force=True, raise_errors=True)

    async def _renew(self, seen: Connection, *, force: bool, raise_errors: bool, wait: bool = True) -> Connection:
        """Refresh under the connection's lease; the row is re-read after taking it, so a refresh that another
        worker finished meanwhile is not repeated (a rotated refresh token is spent only once)."""
        failure: list[PlatformCallError] = []

        async def work(current: Connection) -> Connection | None:
            now = self._now()
            if not current.usable:
                return None
            if force:
                if current.last_refresh_at != seen.last_refresh_at or self._policy.just_refreshed(current, now):
                    return None  # another refresh landed while we waited, or a moment ago: use its tokens
            elif not self._policy.needs_refresh(current, now):
                return None  # renewed by someone else meanwhile
            elif _backing_off(current, now):
                return None
            client = self._client(current.platform)
            try:
                renewal = await client.refresh(current)
            except PlatformCallError as exc:
                failure.append(exc)
                updated = self._after_failure(current, exc, now)
                reauth = updated is not None and updated.status is ConnectionStatus.NEEDS_REAUTH
                self._metrics.token_refresh(current.platform.value, "needs_reauth" if reauth else "error", exc.reason)
                return updated
            self._metrics.token_refresh(current.platform.value, "success")
            changes: dict[str, object] = {}
            if renewal.sub_accounts is not None:
                changes["sub_accounts"] = renewal.sub_accounts
            _log.info("connection refreshed", extra={"connection": current.name, "platform": current.platform.value})
            return refreshed(current, renewal.tokens, now, **changes)

        result = await self._store.with_refresh_lock(seen.owner, seen.id, work, wait=wait)
        if result is None:
            raise NotFound(f"connection {seen.name} not found", reason=CONNECTION_NOT_FOUND)
        if failure and raise_errors:
            exc = failure[0]
            if result.status is ConnectionStatus.NEEDS_REAUTH:
                raise _reauth_error(result)
            if exc.reason == "NO_REFRESH_TOKEN":
                raise FailedPrecondition(
                    exc.message, reason="REFRESH_UNAVAILABLE", metadata={"connection": result.name}
                )
            raise _as_error(exc, "REFRESH_FAILED")
        if raise_errors:
            self._require_usable(result)
        return result

    def _after_failure(self, current: Connection, exc: PlatformCallError, now: datetime) -> Connection | None:
        _log.warning(
            "connection refresh failed",
            extra={
                "connection": current.name,
                "platform": current.platform.value,
                "reason": exc.reason,
                "detail": exc.message,
            },
        )
        if exc.reason == "NO_REFRESH_TOKEN":
            # Nothing to refresh with (LinkedIn without programmatic refresh): usable until it expires.
            expires = current.tokens.expires_at
            if expires is not None and expires > now:
                return replace(current, next_refresh_at=expires, update_time=now)
            return needs_reauth(current, "TOKEN_EXPIRED", "the access token expired and cannot be refreshed", now)
        return refresh_failed(current, exc.kind, exc.reason, exc.message, now, self._policy)

    def _require_usable(self, connection: Connection) -> None:
        if connection.status is ConnectionStatus.REVOKED:
            raise FailedPrecondition(
                f"connection {connection.name} was revoked; connect the account again",
                reason=CONNECTION_REVOKED,
                metadata={"connection": connection.name},
            )
        if connection.status is ConnectionStatus.NEEDS_REAUTH:
            raise _reauth_error(connection)

    async def refresh_due(self, limit: int = 50) -> int:
        """One pass of the background refresher; returns how many connections it renewed or tried."""
        now = self._now()
        due = await self._store.due_for_refresh(now, now + self._policy.margin, limit, tuple(self._clients))
        done = 0
        for owner, connection_id in due:
            try:
                connection = await self._store.find(owner, connection_id)
                if connection is None:
                    continue
                await self._renew(connection, force=False, raise_errors=False, wait=False)
                done += 1
            except Exception:  # one bad row must not stop the others
                _log.exception("background refresh failed", extra={"connection": f"connections/{connection_id}"})
        return done

    # ------------------------------------------------------------------ TokenProvider

    async def fresh_credentials(self, owner: str, connection_id: str) -> ConnectionCredentials:
        connection = await self.get(owner, connection_id)
        self._require_usable(connection)
        now = self._now()
        if connection.platform is not Platform.OUTBOX and self._policy.needs_refresh(connection, now):
            connection = await self._renew(connection, force=False, raise_errors=False)
            self._require_usable(connection)
            expires = connection.tokens.expires_at
            if expires is not None and expires <= now:
                error = connection.last_error
                raise Unavailable(
                    f"connection {connection.name} could not be refreshed: {error.message if error else 'unknown'}",
                    reason=error.reason if error else "REFRESH_FAILED",
                    retry_after=30,
                )
        return _credentials(connection)

    async def force_refresh(self, owner: str, connection_id: str) -> ConnectionCredentials:
        connection = await self.get(owner, connection_id)
        self._require_usable(connection)
        if connection.platform is Platform.OUTBOX:
            return _credentials(connection)
        if self._policy.too_young(connection, self._now()):
            # The platform would refuse the refresh; a token it rejected this young is dead: the caller's
            # retry with it fails and marks the connection for re-authorization.
            return _credentials(connection)
        return _credentials(await self._renew(connection, force=True, raise_errors=True))

    async def mark_needs_reauth(self, owner: str, connection_id: str, reason: str) -> None:
        async def work(current: Connection) -> Connection | None:
            return needs_reauth(current, "PLATFORM_REFUSED_TOKEN", reason[:300], self._now())

        if await self._store.with_refresh_lock(owner, connection_id, work) is None:
            raise NotFound(f"connection connections/{connection_id} not found", reason=CONNECTION_NOT_FOUND)

    async def get_connection(self, owner: str, connection_id: str) -> ConnectionSummary:
        c = await self.get(owner, connection_id)
        return ConnectionSummary(
            connection_id=c.id,
            owner=c.owner,
            platform=c.platform,
            status=c.status,
            profile=c.profile,
            granted_scopes=c.granted_scopes,
            sub_accounts=tuple(SubAccountCredentials(s.id, s.display_name, s.kind) for s in c.sub_accounts),
            metadata=dict(c.metadata),
        )


def _credentials(c: Connection) -> ConnectionCredentials:
    return ConnectionCredentials(
        connection_id=c.id,
        owner=c.owner,
        platform=c.platform,
        account_id=c.profile.account_id,
        access_token=c.tokens.access_token,
        access_token_expires_at=c.tokens.expires_at,
        granted_scopes=c.granted_scopes,
        sub_accounts=tuple(SubAccountCredentials(s.id, s.display_name, s.kind, s.access_token) for s in c.sub_accounts),
        metadata=dict(c.metadata),
    )


def _invalid(violations: list[FieldViolation]) -> InvalidArgument:
    """One message naming every bad field, so logs and CLIs are readable."""
    return InvalidArgument("; ".join(f"{v.field}: {v.description}" for v in violations), violations)


def _reauth_error(connection: Connection) -> FailedPrecondition:
    why = f": {connection.last_error.message}" if connection.last_error else ""
    return FailedPrecondition(
        f"connection {connection.name} needs to be connected again{why}",
        reason=CONNECTION_NEEDS_REAUTH,
        metadata={"connection": connection.name},
    )


def _as_error(exc: PlatformCallError, dead_reason: str) -> Exception:
    if exc.kind is RefreshFailureKind.INVALID_GRANT:
        return FailedPrecondition(exc.message, reason=dead_reason)
    if exc.reason == "PLATFORM_REJECTED":
        return FailedPrecondition(exc.message, reason=dead_reason)
    return Unavailable(exc.message, reason=exc.reason, retry_after=exc.retry_after)


def _backing_off(c: Connection, now: datetime) -> bool:
    """After a transient failure, wait for the backoff, unless the token has already expired."""
    still_valid = c.tokens.expires_at is not None and c.tokens.expires_at > now
    return c.next_refresh_at is not None and c.next_refresh_at > now and still_valid
