"""Instagram API with Instagram Login: code → short-lived token → long-lived (60 days) token, renewed with
`ig_refresh_token` (the token refreshes itself; there is no refresh token). No revoke endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contentpipe.oauth.adapters.platforms.base import PlatformAdapter
from contentpipe.oauth.domain.connections import Connection, Platform, Profile
from contentpipe.oauth.domain.tokens import parse_scopes
from contentpipe.oauth.service_layer.connections_ports import Grant, PlatformSpec, Renewal


class InstagramAdapter(PlatformAdapter):
    @property
    def spec(self) -> PlatformSpec:  # type: ignore[override]
        return PlatformSpec(Platform.INSTAGRAM, "Instagram", self.settings.scopes, False, True, False)

    def authorization_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None
    ) -> str:
        return self._authorize(
            {
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": ",".join(scopes),
                "state": state,
                "enable_fb_login": "0",
            }
        )

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None) -> Grant:
        body: dict[str, Any] = await self.call(
            "POST",
            self.settings.token_url,
            what="Instagram token exchange",
            secrets=[code],
            grant_call=True,
            data={
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "grant_type": "authorization_code",
                "redirect_uri": redirect_uri,
                "code": code,
            },
        )
        # The docs wrap it as {"data": [{...}]}; real integrations read flat fields. Accept both.
        data = body.get("data")
        if isinstance(data, list) and data and isinstance(data[0], dict):
            body = data[0]
        short = self.token_set(body, what="Instagram token exchange")
        long_lived = await self.call(
            "GET",
            f"{self.settings.exchange_url}/access_token",
            what="Instagram long-lived exchange",
            secrets=[short.access_token],
            grant_call=True,
            params={
                "grant_type": "ig_exchange_token",
                "client_secret": self.client_secret,
                "access_token": short.access_token,
            },
        )
        tokens = self.token_set(long_lived, what="Instagram long-lived exchange")
        me = await self.call(
            "GET",
            f"{self.settings.api_base_url}/{self.settings.api_version}/me",
            what="Instagram profile",
            secrets=[tokens.access_token],
            retry=True,
            params={"fields": "user_id,username,name,profile_picture_url,account_type"},
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )
        username = str(me.get("username", ""))
        profile = Profile(
            account_id=str(me.get("user_id") or body.get("user_id") or me.get("id", "")),
            username=username,
            display_name=str(me.get("name", "")),
            avatar_uri=str(me.get("profile_picture_url", "")),
            profile_uri=f"https://www.instagram.com/{username}" if username else "",
        )
        metadata = {"api_version": self.settings.api_version, "api_base_url": self.settings.api_base_url}
        if me.get("account_type"):
            metadata["account_type"] = str(me["account_type"])
        return Grant(
            tokens=tokens,
            profile=profile,
            granted_scopes=parse_scopes(body.get("permissions")),
            metadata=metadata,
        )

    async def refresh(self, connection: Connection) -> Renewal:
        token = connection.tokens.access_token
        body = await self.call(
            "GET",
            f"{self.settings.exchange_url}/refresh_access_token",
            what="Instagram token refresh",
            secrets=[token],
            grant_call=True,
            params={"grant_type": "ig_refresh_token", "access_token": token},
        )
        return Renewal(tokens=self.token_set(body, what="Instagram token refresh"))
