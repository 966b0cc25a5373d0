"""What every platform adapter shares: form/JSON calls with deadlines and bounded retries, OAuth error mapping,
and scrubbing so no token ever reaches an error message."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from contentpipe.common.http import parse_retry_after, retrying_request
from contentpipe.oauth.adapters.platforms.settings import PlatformSettings
from contentpipe.oauth.domain.connections import Connection, RefreshFailureKind
from contentpipe.oauth.domain.tokens import TokenSet, expiry_from, parse_scopes
from contentpipe.oauth.service_layer.connections_ports import PlatformCallError, PlatformSpec

_log = logging.getLogger(__name__)

# OAuth `error` values meaning the grant (code or refresh token) is dead; X also answers `invalid_request`
# with "Value passed for the token was invalid" for a spent refresh token (as X documents it).
_DEAD_GRANT_ERRORS = {"invalid_grant", "invalid_token", "access_denied"}


def now_utc() -> datetime:
    return datetime.now(UTC)


def basic_auth(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (tokens, codes, client secrets) replaced, cut to a readable length."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text[:300]


class PlatformAdapter:
    """Base of the six OAuth adapters: settings, one shared httpx client, and call/error helpers."""

    spec: PlatformSpec

    def __init__(
        self, settings: PlatformSettings, http: httpx.AsyncClient, *, clock: Callable[[], datetime] = now_utc
    ) -> None:
        self.settings = settings
        self.http = http
        self.clock = clock  # the use cases' clock: expiries are computed on it
        self.client_id = settings.client_id or ""
        self.client_secret = settings.client_secret or ""

    # ------------------------------------------------------------------ URLs

    def _authorize(self, params: Mapping[str, str]) -> str:
        sep = "&" if "?" in self.settings.authorize_url else "?"
        return f"{self.settings.authorize_url}{sep}{urlencode(params)}"

    @staticmethod
    def _pkce(params: dict[str, str], code_challenge: str | None) -> dict[str, str]:
        if code_challenge:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        return params

    # ------------------------------------------------------------------ calls

    async def call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        secrets: Sequence[str] = (),
        grant_call: bool = False,
        retry: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Send one request and return its JSON; raise PlatformCallError (INVALID_GRANT or TRANSIENT).

        `grant_call`: an OAuth token-endpoint call, where `invalid_grant`-like answers mean the grant is dead.
        Token calls are not retried blindly (a rotating refresh token may have been spent by a lost response).
        """
        hidden = [*secrets, self.client_secret]
        try:
            response = await retrying_request(
                self.http, method, url, retry_methods={"GET"} if retry else (), max_attempts=3, **kwargs
            )
        except httpx.TimeoutException:
            raise PlatformCallError(RefreshFailureKind.TRANSIENT, "PLATFORM_TIMEOUT", f"{what}: timed out") from None
        except httpx.TransportError as exc:
            raise PlatformCallError(
                RefreshFailureKind.TRANSIENT, "PLATFORM_UNAVAILABLE", f"{what}: {type(exc).__name__}"
            ) from None
        body: Any
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        if response.is_success:
            if not isinstance(body, dict):
                raise PlatformCallError(
                    RefreshFailureKind.TRANSIENT, "PLATFORM_BAD_RESPONSE", f"{what}: unexpected response body"
                )
            return body
        raise self._error(response, body, what=what, hidden=hidden, grant_call=grant_call)

    def _error(
        self, response: httpx.Response, body: Any, *, what: str, hidden: Sequence[str], grant_call: bool
    ) -> PlatformCallError:
        status = response.status_code
        code, description = self._error_fields(body)
        detail = scrub(
            f"{what}: HTTP {status}" + (f" {code}" if code else "") + (f": {description}" if description else ""),
            hidden,
        )
        if status == 429:
            return PlatformCallError(
                RefreshFailureKind.TRANSIENT,
                "RATE_LIMITED",
                detail,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        if status >= 500 or status in (408, 425):
            return PlatformCallError(RefreshFailureKind.TRANSIENT, "PLATFORM_UNAVAILABLE", detail)
        if self._is_dead_grant(status, code, description, grant_call):
            return PlatformCallError(RefreshFailureKind.INVALID_GRANT, "INVALID_GRANT", detail)
        return PlatformCallError(RefreshFailureKind.TRANSIENT, "PLATFORM_REJECTED", detail)

    @staticmethod
    def _error_fields(body: Any) -> tuple[str, str]:
        """(error code, description) from the standard OAuth shape, Graph's envelope or TikTok's."""
        if not isinstance(body, dict):
            return "", ""
        error = body.get("error")
        if isinstance(error, dict):  # Graph {"error":{"message","code",...}}; TikTok {"error":{"code","message"}}
            return str(error.get("code", "")), str(error.get("message", ""))
        return str(error or ""), str(body.get("error_description") or body.get("message") or "")

    @staticmethod
    def _is_dead_grant(status: int, code: str, description: str, grant_call: bool) -> bool:
        if code in ("190", "access_token_invalid"):  # Graph / TikTok: the token itself is invalid
            return True
        if code in _DEAD_GRANT_ERRORS:
            return grant_call or status == 401
        text = description.lower()
        return grant_call and code == "invalid_request" and "token" in text and "invalid" in text

    # ------------------------------------------------------------------ token responses

    def token_set(self, body: Mapping[str, Any], *, what: str) -> TokenSet:
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise PlatformCallError(RefreshFailureKind.TRANSIENT, "PLATFORM_BAD_RESPONSE", f"{what}: no access_token")
        now = self.clock()
        refresh = body.get("refresh_token")
        return TokenSet(
            access_token=access,
            refresh_token=refresh if isinstance(refresh, str) else "",
            expires_at=expiry_from(now, body.get("expires_in")),
            refresh_expires_at=expiry_from(now, body.get("refresh_token_expires_in", body.get("refresh_expires_in"))),
            scopes=parse_scopes(body.get("scope")),
        )

    async def revoke(self, connection: Connection) -> None:
        raise PlatformCallError(
            RefreshFailureKind.TRANSIENT,
            "REVOKE_UNSUPPORTED",
            f"{self.spec.display_name} has no revoke endpoint; remove the app in the account's settings",
        )

    def require_refresh_token(self, connection: Connection) -> str:
        if not connection.tokens.refresh_token:
            raise PlatformCallError(
                RefreshFailureKind.INVALID_GRANT,
                "NO_REFRESH_TOKEN",
                f"{self.spec.display_name} issued no refresh token for this connection; connect again",
            )
        return connection.tokens.refresh_token
