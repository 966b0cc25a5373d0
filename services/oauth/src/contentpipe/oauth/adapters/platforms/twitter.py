"""X (Twitter): OAuth 2.0 authorization code + PKCE, confidential client (Basic auth), rotating refresh tokens."""

from __future__ import annotations

from collections.abc import Sequence

from contentpipe.oauth.adapters.platforms.base import PlatformAdapter, basic_auth
from contentpipe.oauth.domain.connections import Connection, Platform, Profile
from contentpipe.oauth.service_layer.connections_ports import Grant, PlatformSpec, Renewal


class TwitterAdapter(PlatformAdapter):
    @property
    def spec(self) -> PlatformSpec:  # type: ignore[override]
        return PlatformSpec(Platform.TWITTER, "X", self.settings.scopes, True, True, True)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": basic_auth(self.client_id, self.client_secret)}

    def authorization_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None
    ) -> str:
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "state": state,
        }
        return self._authorize(self._pkce(params, code_challenge))

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None) -> Grant:
        body = await self.call(
            "POST",
            self.settings.token_url,
            what="X token exchange",
            secrets=[code, code_verifier or ""],
            grant_call=True,
            headers=self._auth(),
            data={
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier or "",
            },
        )
        tokens = self.token_set(body, what="X token exchange")
        me = await self.call(
            "GET",
            f"{self.settings.api_base_url}/2/users/me",
            what="X profile",
            secrets=[tokens.access_token],
            retry=True,
            params={"user.fields": "id,name,username,profile_image_url,verified"},
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )
        data = me.get("data") or {}
        username = str(data.get("username", ""))
        profile = Profile(
            account_id=str(data.get("id", "")),
            username=username,
            display_name=str(data.get("name", "")),
            avatar_uri=str(data.get("profile_image_url", "")),
            profile_uri=f"https://x.com/{username}" if username else "",
        )
        return Grant(
            tokens=tokens,
            profile=profile,
            granted_scopes=tokens.scopes,
            metadata={"api_base_url": self.settings.api_base_url},
        )

    async def refresh(self, connection: Connection) -> Renewal:
        refresh_token = self.require_refresh_token(connection)
        body = await self.call(
            "POST",
            self.settings.token_url,
            what="X token refresh",
            secrets=[refresh_token, connection.tokens.access_token],
            grant_call=True,
            headers=self._auth(),
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        )
        return Renewal(tokens=self.token_set(body, what="X token refresh"))

    async def revoke(self, connection: Connection) -> None:
        tokens = connection.tokens
        for token, hint in ((tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")):
            if token:
                await self.call(
                    "POST",
                    self.settings.revoke_url,
                    what="X revoke",
                    secrets=[tokens.access_token, tokens.refresh_token],
                    headers=self._auth(),
                    data={"token": token, "token_type_hint": hint},
                )
