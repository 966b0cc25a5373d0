"""TikTok Login Kit for Web: `client_key`, comma-separated scopes, `open_id`, rotating refresh tokens."""

from __future__ import annotations

from collections.abc import Sequence

from contentpipe.oauth.adapters.platforms.base import PlatformAdapter
from contentpipe.oauth.domain.connections import Connection, Platform, Profile, RefreshFailureKind
from contentpipe.oauth.service_layer.connections_ports import Grant, PlatformCallError, PlatformSpec, Renewal


class TikTokAdapter(PlatformAdapter):
    @property
    def spec(self) -> PlatformSpec:  # type: ignore[override]
        return PlatformSpec(Platform.TIKTOK, "TikTok", self.settings.scopes, False, True, True)

    def _client(self) -> dict[str, str]:
        return {"client_key": self.client_id, "client_secret": self.client_secret}

    def authorization_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None
    ) -> str:
        return self._authorize(
            {
                "client_key": self.client_id,
                "response_type": "code",
                "scope": ",".join(scopes),
                "redirect_uri": redirect_uri,
                "state": state,
            }
        )

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None) -> Grant:
        body = await self.call(
            "POST",
            self.settings.token_url,
            what="TikTok token exchange",
            secrets=[code],
            grant_call=True,
            data={"code": code, "grant_type": "authorization_code", "redirect_uri": redirect_uri, **self._client()},
        )
        tokens = self.token_set(body, what="TikTok token exchange")
        info = await self.call(
            "GET",
            self.settings.userinfo_url,
            what="TikTok user info",
            secrets=[tokens.access_token],
            retry=True,
            params={"fields": "open_id,union_id,avatar_url,display_name,username"},
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )
        error = info.get("error") or {}
        if isinstance(error, dict) and error.get("code") not in (None, "", "ok"):
            raise PlatformCallError(
                RefreshFailureKind.TRANSIENT, "PLATFORM_REJECTED", f"TikTok user info: {error.get('code')}"
            )
        user = (info.get("data") or {}).get("user") or {}
        open_id = str(user.get("open_id") or body.get("open_id") or "")
        username = str(user.get("username", ""))
        profile = Profile(
            account_id=open_id,
            username=username,
            display_name=str(user.get("display_name", "")),
            avatar_uri=str(user.get("avatar_url", "")),
            profile_uri=f"https://www.tiktok.com/@{username}" if username else "",
        )
        metadata = {"api_base_url": self.settings.api_base_url}
        if user.get("union_id"):
            metadata["union_id"] = str(user["union_id"])
        return Grant(tokens=tokens, profile=profile, granted_scopes=tokens.scopes, metadata=metadata)

    async def refresh(self, connection: Connection) -> Renewal:
        refresh_token = self.require_refresh_token(connection)
        body = await self.call(
            "POST",
            self.settings.token_url,
            what="TikTok token refresh",
            secrets=[refresh_token, connection.tokens.access_token],
            grant_call=True,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token, **self._client()},
        )
        return Renewal(tokens=self.token_set(body, what="TikTok token refresh"))

    async def revoke(self, connection: Connection) -> None:
        await self.call(
            "POST",
            self.settings.revoke_url,
            what="TikTok revoke",
            secrets=[connection.tokens.access_token],
            data={"token": connection.tokens.access_token, **self._client()},
        )
