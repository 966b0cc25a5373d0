"""Facebook Login (Graph API, version configurable): short-lived → long-lived user token, Page tokens.

Facebook has no refresh token: renewing is another `fb_exchange_token` with the current long-lived token
(what Nango and mixpost do), and the Page tokens are read again with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contentpipe.oauth.adapters.platforms.base import PlatformAdapter
from contentpipe.oauth.domain.connections import Connection, Platform, Profile, SubAccount
from contentpipe.oauth.domain.tokens import TokenSet
from contentpipe.oauth.service_layer.connections_ports import Grant, PlatformSpec, Renewal


class FacebookAdapter(PlatformAdapter):
    @property
    def spec(self) -> PlatformSpec:  # type: ignore[override]
        return PlatformSpec(Platform.FACEBOOK, "Facebook", self.settings.scopes, False, True, True)

    @property
    def _graph(self) -> str:
        return f"{self.settings.api_base_url}/{self.settings.api_version}"

    def authorization_url(
        self, *, redirect_uri: str, state: str, scopes: Sequence[str], code_challenge: str | None
    ) -> str:
        return self._authorize(
            {
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "scope": ",".join(scopes),
                "response_type": "code",
            }
        )

    async def _long_lived(self, token: str, what: str) -> TokenSet:
        body = await self.call(
            "GET",
            self.settings.token_url,
            what=what,
            secrets=[token],
            grant_call=True,
            params={
                "grant_type": "fb_exchange_token",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "fb_exchange_token": token,
            },
        )
        return self.token_set(body, what=what)

    async def _get(self, path: str, token: str, what: str, **params: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "GET",
            f"{self._graph}{path}",
            what=what,
            secrets=[token],
            retry=True,
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )
        return result

    async def _pages(self, token: str, granted: tuple[str, ...]) -> tuple[SubAccount, ...]:
        """The user's Pages (`/me/accounts`) plus, with business_management, those owned through Business Manager
        (`/me/businesses` → `/{business}/owned_pages`), which `/me/accounts` does not list."""
        body = await self._get(
            "/me/accounts", token, "Facebook pages", fields="id,name,access_token,picture.type(large)", limit="100"
        )
        found = [page for page in body.get("data") or [] if isinstance(page, dict) and page.get("id")]
        if "business_management" in granted:
            businesses = await self._get("/me/businesses", token, "Facebook businesses", fields="id,name", limit="100")
            for business in businesses.get("data") or []:
                if not isinstance(business, dict) or not business.get("id"):
                    continue
                owned = await self._get(
                    f"/{business['id']}/owned_pages",
                    token,
                    "Facebook business pages",
                    fields="id,name,access_token",
                    limit="100",
                )
                found.extend(page for page in owned.get("data") or [] if isinstance(page, dict) and page.get("id"))
        pages: dict[str, SubAccount] = {}
        for page in found:
            ident = str(page["id"])
            if ident not in pages or not pages[ident].access_token:  # a Page listed twice: keep one with a token
                pages[ident] = SubAccount(
                    id=ident,
                    display_name=str(page.get("name", "")),
                    kind="facebook_page",
                    access_token=str(page.get("access_token", "")),
                )
        return tuple(pages.values())

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None) -> Grant:
        short = await self.call(
            "GET",
            self.settings.token_url,
            what="Facebook token exchange",
            secrets=[code],
            grant_call=True,
            params={
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "client_secret": self.client_secret,
                "code": code,
            },
        )
        short_token = self.token_set(short, what="Facebook token exchange").access_token
        tokens = await self._long_lived(short_token, "Facebook long-lived exchange")
        permissions = await self._get("/me/permissions", tokens.access_token, "Facebook permissions")
        granted = tuple(
            str(p.get("permission"))
            for p in permissions.get("data") or []
            if isinstance(p, dict) and p.get("status") == "granted"
        )
        me = await self._get("/me", tokens.access_token, "Facebook profile", fields="id,name,picture")
        picture = ((me.get("picture") or {}).get("data") or {}).get("url", "")
        profile = Profile(
            account_id=str(me.get("id", "")),
            display_name=str(me.get("name", "")),
            avatar_uri=str(picture),
        )
        return Grant(
            tokens=tokens,
            profile=profile,
            granted_scopes=granted,
            sub_accounts=await self._pages(tokens.access_token, granted),
            metadata={"api_version": self.settings.api_version, "api_base_url": self.settings.api_base_url},
        )

    async def refresh(self, connection: Connection) -> Renewal:
        tokens = await self._long_lived(connection.tokens.access_token, "Facebook token re-exchange")
        return Renewal(tokens=tokens, sub_accounts=await self._pages(tokens.access_token, connection.granted_scopes))

    async def revoke(self, connection: Connection) -> None:
        token = connection.tokens.access_token
        await self.call(
            "DELETE",
            f"{self._graph}/me/permissions",
            what="Facebook revoke",
            secrets=[token],
            headers={"Authorization": f"Bearer {token}"},
        )
