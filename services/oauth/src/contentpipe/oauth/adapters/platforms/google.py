"""Google (OpenID Connect) for YouTube: PKCE, `access_type=offline` + `prompt=consent`, userinfo; refresh usually
returns no new refresh token (the stored one is kept)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from contentpipe.common.errors import FailedPrecondition
from contentpipe.oauth.adapters.platforms.base import PlatformAdapter
from contentpipe.oauth.domain.connections import Connection, Platform, Profile
from contentpipe.oauth.domain.tokens import TokenSet
from contentpipe.oauth.service_layer.connections_ports import Grant, PlatformCallError, PlatformSpec, Renewal

_log = logging.getLogger(__name__)

# Google answers the OpenID scopes it was asked for as `email`/`profile` with their long names.
_SCOPE_ALIASES = {
    "https://www.googleapis.com/auth/userinfo.email": "email",
    "https://www.googleapis.com/auth/userinfo.profile": "profile",
}


class GoogleAdapter(PlatformAdapter):
    @property
    def spec(self) -> PlatformSpec:  # type: ignore[override]
        return PlatformSpec(Platform.GOOGLE, "YouTube (Google)", self.settings.scopes, True, True, True)

    def _client(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    def token_set(self, body: Mapping[str, Any], *, what: str) -> TokenSet:
        tokens = super().token_set(body, what=what)
        if tokens.scopes is None:
            return tokens
        scopes = tuple(dict.fromkeys(_SCOPE_ALIASES.get(s, s) for s in tokens.scopes))
        return replace(tokens, scopes=scopes)

    def authorization_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None
    ) -> str:
        params = {
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(scopes),
            "state": state,
            "access_type": "offline",
            "prompt": "consent",
            "include_granted_scopes": "true",
        }
        return self._authorize(self._pkce(params, code_challenge))

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None) -> Grant:
        data = {"code": code, "grant_type": "authorization_code", "redirect_uri": redirect_uri, **self._client()}
        if code_verifier:
            data["code_verifier"] = code_verifier
        body = await self.call(
            "POST",
            self.settings.token_url,
            what="Google token exchange",
            secrets=[code, code_verifier or ""],
            grant_call=True,
            data=data,
        )
        tokens = self.token_set(body, what="Google token exchange")
        info = await self.call(
            "GET",
            self.settings.userinfo_url,
            what="Google userinfo",
            secrets=[tokens.access_token],
            retry=True,
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )
        profile = Profile(
            account_id=str(info.get("sub", "")),
            username=str(info.get("email", "")),
            display_name=str(info.get("name", "")),
            avatar_uri=str(info.get("picture", "")),
        )
        metadata = {"api_base_url": self.settings.api_base_url}
        metadata.update(await self._channel(tokens.access_token))
        return Grant(tokens=tokens, profile=profile, granted_scopes=tokens.scopes, metadata=metadata)

    async def _channel(self, access_token: str) -> dict[str, str]:
        """The account's YouTube channel. `channels.list?mine=true` needs youtube.readonly (youtube.upload alone is
        403): a refusal or an account without a channel fails the connection with the fix, never silently."""
        try:
            body = await self.call(
                "GET",
                f"{self.settings.api_base_url}/youtube/v3/channels",
                what="YouTube channel",
                secrets=[access_token],
                retry=True,
                params={"part": "snippet", "mine": "true"},
                headers={"Authorization": f"Bearer {access_token}"},
            )
        except PlatformCallError as exc:
            _log.warning("youtube channel not read", extra={"reason": exc.reason})
            if exc.reason != "PLATFORM_REJECTED":
                raise
            raise FailedPrecondition(
                "YouTube refused to read the account's channel: connect again allowing YouTube read access "
                "(scope https://www.googleapis.com/auth/youtube.readonly; GOOGLE_SCOPES must include it)",
                reason="YOUTUBE_SCOPE_MISSING",
            ) from None
        items = body.get("items") or []
        if not items or not isinstance(items[0], dict):
            raise FailedPrecondition(
                "this Google account has no YouTube channel: create one on youtube.com, then connect again",
                reason="YOUTUBE_CHANNEL_MISSING",
            )
        channel = items[0]
        return {
            "youtube_channel_id": str(channel.get("id", "")),
            "youtube_channel_title": str((channel.get("snippet") or {}).get("title", "")),
        }

    async def refresh(self, connection: Connection) -> Renewal:
        refresh_token = self.require_refresh_token(connection)
        body = await self.call(
            "POST",
            self.settings.token_url,
            what="Google token refresh",
            secrets=[refresh_token, connection.tokens.access_token],
            grant_call=True,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token, **self._client()},
        )
        return Renewal(tokens=self.token_set(body, what="Google token refresh"))

    async def revoke(self, connection: Connection) -> None:
        token = connection.tokens.refresh_token or connection.tokens.access_token
        await self.call(
            "POST",
            self.settings.revoke_url,
            what="Google revoke",
            secrets=[connection.tokens.access_token, connection.tokens.refresh_token],
            data={"token": token, **self._client()},
        )
