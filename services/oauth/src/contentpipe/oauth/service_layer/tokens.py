"""The seam between connections and posting: fresh platform credentials for one of a user's connections.

Posting (and anything else that calls a platform on a user's behalf) depends only on `TokenProvider`; the
connections service layer implements it. Tokens never leave the oauth service: this is an in-process port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from contentpipe.oauth.domain.connections import ConnectionStatus, Platform, Profile

# ErrorInfo reasons raised through this port (FailedPrecondition; metadata carries `connection`).
CONNECTION_NEEDS_REAUTH = "CONNECTION_NEEDS_REAUTH"
CONNECTION_REVOKED = "CONNECTION_REVOKED"
# NotFound reason for a connection that does not exist or belongs to another user.
CONNECTION_NOT_FOUND = "CONNECTION_NOT_FOUND"


@dataclass(frozen=True, slots=True)
class SubAccountCredentials:
    """A publishing target inside the account: a Facebook Page (with its Page token) or a linked IG account."""

    id: str
    display_name: str
    kind: str  # "facebook_page" | "instagram_account"
    access_token: str = field(default="", repr=False)  # the Page token; "" where the user token is used


@dataclass(frozen=True, slots=True)
class ConnectionCredentials:
    """What a publisher needs to call the platform as the connected account. Never log it (repr hides tokens)."""

    connection_id: str
    owner: str
    platform: Platform
    account_id: str  # X user id, LinkedIn `sub` (author urn:li:person:{sub}), TikTok open_id, Google sub, IG user_id
    access_token: str = field(repr=False)  # "" for the outbox
    access_token_expires_at: datetime | None = None
    granted_scopes: tuple[str, ...] = ()
    sub_accounts: tuple[SubAccountCredentials, ...] = ()
    # e.g. api_version (Graph), api_base_url, account_type, youtube_channel_id, outbox_dir
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ConnectionSummary:
    """A connection's public side, for validating a post before it is accepted (no tokens)."""

    connection_id: str
    owner: str
    platform: Platform
    status: ConnectionStatus
    profile: Profile
    granted_scopes: tuple[str, ...] = ()
    sub_accounts: tuple[SubAccountCredentials, ...] = ()  # access_token always "" here
    metadata: Mapping[str, str] = field(default_factory=dict)


class TokenProvider(Protocol):
    """Credentials of a user's connection, always fresh. Implemented by service_layer.connections."""

    async def fresh_credentials(self, owner: str, connection_id: str) -> ConnectionCredentials:
        """Credentials whose access token is valid for at least the refresh margin (refreshed on the spot,
        serialized with the background refresher; a rotated refresh token is stored before this returns).

        Raises NotFound(reason CONNECTION_NOT_FOUND) when the connection does not exist or is `owner`'s not;
        FailedPrecondition(reason CONNECTION_NEEDS_REAUTH | CONNECTION_REVOKED, metadata {"connection": name})
        when the user must connect again; Unavailable when the platform's token endpoint fails transiently
        (the connection turns REFRESH_FAILING but keeps its still-valid token if there is one).
        """
        ...

    async def force_refresh(self, owner: str, connection_id: str) -> ConnectionCredentials:
        """One refresh now whatever the expiry (for a 401 from the platform while publishing). Same errors."""
        ...

    async def mark_needs_reauth(self, owner: str, connection_id: str, reason: str) -> None:
        """Record that the platform refused the token (e.g. Graph code 190 after a refresh): NEEDS_REAUTH,
        last error = `reason` (never include a token in it)."""
        ...

    async def get_connection(self, owner: str, connection_id: str) -> ConnectionSummary:
        """Status, platform and profile, without refreshing. NotFound as above; never raises for status."""
        ...
