"""LinkedIn: OAuth 2.0 (3-legged) with client credentials in the body, OpenID Connect userinfo; refresh tokens
only for apps approved for programmatic refresh."""

from __future__ import annotations

from collections.abc import Sequence

from contentpipe.oauth.adapters.platforms.base import PlatformAdapter
from contentpipe.oauth.domain.connections import Connection, Platform, Profile
from contentpipe.oauth.service_layer.connections_ports import Grant, PlatformSpec, Renewal


class LinkedInAdapter(PlatformAdapter):
    @property
    def spec(self) -> PlatformSpec:  # type: ignore[override]
        return PlatformSpec(Platform.LINKEDIN, "LinkedIn", self.settings.scopes, False, True, True)

    def _client(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self.client_secret}

    def authorization_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None
    ) -> str:
        return self._authorize(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "scope": " ".join(scopes),
            }
        )

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None) -> Grant:
        body = await self.call(
            "POST",
            self.settings.token_url,
            what="LinkedIn token exchange",
            secrets=[code],
            grant_call=True,
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, **self._client()},
        )
        tokens = self.token_set(body, what="LinkedIn token exchange")
        info = await self.call(
            "GET",
            self.settings.userinfo_url,
            what="LinkedIn userinfo",
            secrets=[tokens.access_token],
            retry=True,
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )
        sub = str(info.get("sub", ""))
        profile = Profile(
            account_id=sub,
            username=str(info.get("email", "")),
            display_name=str(info.get("name", "")),
            avatar_uri=str(info.get("picture", "")),
        )
        return Grant(
            tokens=tokens,
            profile=profile,
            granted_scopes=tokens.scopes,
            metadata={"author_urn": f"urn:li:person:{sub}", "api_base_url": self.settings.api_base_url},
        )

    async def refresh(self, connection: Connection) -> Renewal:
        refresh_token = self.require_refresh_token(connection)
        body = await self.call(
            "POST",
            self.settings.token_url,
            what="LinkedIn token refresh",
            secrets=[refresh_token, connection.tokens.access_token],
            grant_call=True,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token, **self._client()},
        )
        return Renewal(tokens=self.token_set(body, what="LinkedIn token refresh"))

    async def revoke(self, connection: Connection) -> None:
        await self.call(
            "POST",
            self.settings.revoke_url,
            what="LinkedIn revoke",
            secrets=[connection.tokens.access_token],
            data={"token": connection.tokens.access_token, **self._client()},
        )
