"""Loopback fakes of the OAuth endpoints of X, LinkedIn, TikTok, Facebook and Instagram.

One Starlette app, each platform under its own prefix (`/twitter`, `/linkedin`, ...). They follow the documented
contracts: X wants HTTP Basic client auth on token/revoke and rotates single-use refresh tokens (a spent one
answers `invalid_request` "Value passed for the token was invalid."); LinkedIn and TikTok want client credentials in
the body (TikTok's is `client_key`), answer comma-separated scopes, TikTok rotates refresh tokens; Facebook exchanges
short- for long-lived tokens and lists Pages with their tokens; Instagram exchanges and refreshes the token itself.
The authorize endpoints play a consenting user: they check the platform's parameters and redirect back with a code.

Every token handed out is recorded in `issued` so tests can look for it where it must never appear.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENTS = {
    "twitter": ("x-client-id", "x-client-secret"),
    "linkedin": ("li-client-id", "li-client-secret"),
    "tiktok": ("tt-client-key", "tt-client-secret"),
    "facebook": ("fb-app-id", "fb-app-secret"),
    "instagram": ("ig-app-id", "ig-app-secret"),
}
GRAPH_VERSION = "v99.0"
IG_VERSION = "v21.0"


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class IssuedCode:
    platform: str
    redirect_uri: str
    scopes: list[str]
    challenge: str = ""


@dataclass
class Account:
    id: str
    username: str
    name: str


@dataclass
class FakePlatforms:
    """State of all five fakes; tests tweak `untick`, `fail_refresh_with` and read the counters."""

    accounts: dict[str, Account] = field(
        default_factory=lambda: {
            "twitter": Account("1460000000000000001", "alice_x", "Alice on X"),
            "linkedin": Account("li-sub-alice", "alice@example.com", "Alice LinkedIn"),
            "tiktok": Account("tt-open-id-alice", "alice.tt", "Alice TikTok"),
            "facebook": Account("10150000000000001", "", "Alice Facebook"),
            "instagram": Account("17841400000000001", "alice.ig", "Alice Instagram"),
        }
    )
    untick: dict[str, set[str]] = field(default_factory=dict)  # scopes the user unticks at consent
    refuse_consent: set[str] = field(default_factory=set)  # platforms where the user presses "Cancel"
    fail_refresh_with: dict[str, int] = field(default_factory=dict)  # platform → HTTP status for refreshes
    linkedin_refresh_tokens: bool = True  # programmatic refresh approved for the app
    refresh_delay: float = 0.0  # seconds X waits before answering a refresh it has already performed
    access_ttl: int = 7200
    issued: set[str] = field(default_factory=set)
    codes: dict[str, IssuedCode] = field(default_factory=dict)
    access: dict[str, str] = field(default_factory=dict)  # token → platform (live access tokens)
    refresh: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # live refresh token → (platform, scopes)
    spent_refresh: set[str] = field(default_factory=set)
    revoked: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    granted_facebook: list[str] = field(default_factory=list)
    # Instagram: when each long-lived token was issued; ig_refresh_token refuses one younger than 24 h.
    instagram_issued_at: dict[str, float] = field(default_factory=dict)
    instagram_min_refresh_age: float = 24 * 3600.0
    page_tokens: dict[str, str] = field(default_factory=dict)  # Facebook Page token → Page id
    lock: threading.Lock = field(default_factory=threading.Lock)

    # ------------------------------------------------------------------ helpers

    def _token(self, platform: str, kind: str) -> str:
        token = f"{platform}-{kind}-{secrets.token_hex(16)}"
        self.issued.add(token)
        return token

    def _grant(self, platform: str, scopes: list[str], *, with_refresh: bool = True) -> dict[str, Any]:
        access = self._token(platform, "at")
        self.access[access] = platform
        body: dict[str, Any] = {"access_token": access, "token_type": "bearer", "expires_in": self.access_ttl}
        if with_refresh:
            refresh = self._token(platform, "rt")
            self.refresh[refresh] = (platform, scopes)
            body["refresh_token"] = refresh
        return body

    @staticmethod
    def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": error, "error_description": description}, status_code=status)

    @staticmethod
    def _graph_error(message: str, code: int = 190, status: int = 400) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbC"}},
            status_code=status,
        )

    def _bearer(self, request: Request, platform: str) -> str | None:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("access_token", "")
        if token in self.access and self.access[token] == platform and token not in self.revoked:
            return token
        return None

    def _authorize(self, request: Request, platform: str, *, client_param: str, separator: str) -> Response:
        q = request.query_params
        client_id = CLIENTS[platform][0]
        problems = []
        if q.get(client_param) != client_id:
            problems.append(f"{client_param} must be the app's id")
        if q.get("response_type") != "code":
            problems.append("response_type must be code")
        if not q.get("redirect_uri") or not q.get("state"):
            problems.append("redirect_uri and state are required")
        raw_scope = q.get("scope", "")
        other = " " if separator == "," else ","
        if other in raw_scope:
            problems.append(f"scopes must be separated by {separator!r}")
        if platform == "twitter" and (q.get("code_challenge_method") != "S256" or not q.get("code_challenge")):
            problems.append("PKCE S256 is required")
        if problems:
            return JSONResponse({"error": "invalid_request", "error_description": "; ".join(problems)}, 400)
        sep = "&" if "?" in q["redirect_uri"] else "?"
        if platform in self.refuse_consent:  # RFC 6749 §4.1.2.1: the refusal goes back to the redirect URI
            refusal = {
                "error": "access_denied",
                "error_description": "The user denied the request",
                "state": q["state"],
            }
            return RedirectResponse(f"{q['redirect_uri']}{sep}{urlencode(refusal)}", 302)
        scopes = [s for s in raw_scope.split(separator) if s and s not in self.untick.get(platform, set())]
        code = self._token(platform, "code")
        self.codes[code] = IssuedCode(platform, q["redirect_uri"], scopes, q.get("code_challenge", ""))
        return RedirectResponse(f"{q['redirect_uri']}{sep}{urlencode({'code': code, 'state': q['state']})}", 302)

    def _take_code(self, platform: str, form: Any) -> IssuedCode | Response:
        code = self.codes.pop(str(form.get("code", "")), None)
        if code is None or code.platform != platform:
            return self._oauth_error("invalid_grant", "Value passed for the authorization code was invalid.")
        if form.get("redirect_uri") != code.redirect_uri:
            return self._oauth_error("invalid_grant", "redirect_uri does not match")
        if code.challenge and _challenge(str(form.get("code_verifier", ""))) != code.challenge:
            return self._oauth_error("invalid_grant", "code_verifier does not match the code_challenge")
        return code

    def _body_client(self, platform: str, form: Any, id_field: str = "client_id") -> Response | None:
        client_id, secret = CLIENTS[platform]
        if form.get(id_field) != client_id or form.get("client_secret") != secret:
            return self._oauth_error("invalid_client", "client authentication failed", 401)
        return None

    def _rotate(self, platform: str, token: str) -> tuple[list[str], Response | None]:
        """Spend a refresh token (single use). A spent or unknown one is refused."""
        with self.lock:
            live = self.refresh.pop(token, None)
            if live is None or live[0] != platform:
                self.calls[f"{platform}.refresh_refused"] += 1
                if platform == "twitter":
                    return [], self._oauth_error("invalid_request", "Value passed for the token was invalid.")
                return [], self._oauth_error("invalid_grant", "Refresh token is invalid or expired.")
            self.spent_refresh.add(token)
            self.calls[f"{platform}.refresh"] += 1
            return live[1], None

    # ------------------------------------------------------------------ X

    async def twitter_authorize(self, request: Request) -> Response:
        return self._authorize(request, "twitter", client_param="client_id", separator=" ")

    def _twitter_basic_ok(self, request: Request) -> bool:
        client_id, secret = CLIENTS["twitter"]
        expected = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return request.headers.get("authorization") == expected

    async def twitter_token(self, request: Request) -> Response:
        if not self._twitter_basic_ok(request):
            return self._oauth_error("unauthorized_client", "Missing valid authorization header", 401)
        form = await _form(request)
        if form.get("grant_type") == "authorization_code":
            code = self._take_code("twitter", form)
            if isinstance(code, Response):
                return code
            body = self._grant("twitter", code.scopes, with_refresh="offline.access" in code.scopes)
            return JSONResponse({**body, "scope": " ".join(code.scopes)})
        if form.get("grant_type") == "refresh_token":
            if status := self.fail_refresh_with.get("twitter"):
                return self._oauth_error("server_error", "try later", status)
            scopes, error = self._rotate("twitter", str(form.get("refresh_token", "")))
            if error:
                return error
            grant = {**self._grant("twitter", scopes), "scope": " ".join(scopes)}
            await asyncio.sleep(self.refresh_delay)  # the old refresh token is already spent
            return JSONResponse(grant)
        return self._oauth_error("unsupported_grant_type", "grant_type")

    async def twitter_revoke(self, request: Request) -> Response:
        if not self._twitter_basic_ok(request):
            return self._oauth_error("unauthorized_client", "Missing valid authorization header", 401)
        form = await _form(request)
        token = str(form.get("token", ""))
        self.revoked.add(token)
        self.refresh.pop(token, None)
        self.calls["twitter.revoke"] += 1
        return JSONResponse({"revoked": True})

    async def twitter_me(self, request: Request) -> Response:
        if self._bearer(request, "twitter") is None:
            return JSONResponse({"title": "Unauthorized", "status": 401}, 401)
        a = self.accounts["twitter"]
        return JSONResponse(
            {"data": {"id": a.id, "username": a.username, "name": a.name, "profile_image_url": "https://pbs/x.png"}}
        )

    # ------------------------------------------------------------------ LinkedIn

    async def linkedin_authorize(self, request: Request) -> Response:
        return self._authorize(request, "linkedin", client_param="client_id", separator=" ")

    async def linkedin_token(self, request: Request) -> Response:
        form = await _form(request)
        if "authorization" in request.headers:
            return self._oauth_error("invalid_request", "client credentials go in the body")
        if error := self._body_client("linkedin", form):
            return error
        if form.get("grant_type") == "authorization_code":
            code = self._take_code("linkedin", form)
            if isinstance(code, Response):
                return code
            body = self._grant("linkedin", code.scopes, with_refresh=self.linkedin_refresh_tokens)
            if self.linkedin_refresh_tokens:
                body["refresh_token_expires_in"] = 31536000
            return JSONResponse({**body, "expires_in": 5184000, "scope": ",".join(code.scopes)})
        if form.get("grant_type") == "refresh_token":
            token = str(form.get("refresh_token", ""))
            live = self.refresh.get(token)  # LinkedIn does not rotate: the same refresh token stays valid
            if live is None:
                return self._oauth_error("invalid_grant", "The provided refresh token is invalid")
            self.calls["linkedin.refresh"] += 1
            body = self._grant("linkedin", live[1], with_refresh=False)
            return JSONResponse({**body, "expires_in": 5184000, "refresh_token": token, "scope": ",".join(live[1])})
        return self._oauth_error("invalid_request", 'A required parameter "grant_type" is missing')

    async def linkedin_userinfo(self, request: Request) -> Response:
        if self._bearer(request, "linkedin") is None:
            return JSONResponse({"status": 401, "serviceErrorCode": 65600, "code": "INVALID_ACCESS_TOKEN"}, 401)
        a = self.accounts["linkedin"]
        return JSONResponse({"sub": a.id, "name": a.name, "email": a.username, "picture": "https://media/li.png"})

    async def linkedin_revoke(self, request: Request) -> Response:
        form = await _form(request)
        if error := self._body_client("linkedin", form):
            return error
        self.revoked.add(str(form.get("token", "")))
        self.calls["linkedin.revoke"] += 1
        return Response(status_code=200)

    # ------------------------------------------------------------------ TikTok

    async def tiktok_authorize(self, request: Request) -> Response:
        return self._authorize(request, "tiktok", client_param="client_key", separator=",")

    async def tiktok_token(self, request: Request) -> Response:
        form = await _form(request)
        if error := self._body_client("tiktok", form, "client_key"):
            return error
        if form.get("grant_type") == "authorization_code":
            code = self._take_code("tiktok", form)
            if isinstance(code, Response):
                return code
            body = self._grant("tiktok", code.scopes)
            return JSONResponse(
                {
                    **body,
                    "open_id": self.accounts["tiktok"].id,
                    "scope": ",".join(code.scopes),
                    "refresh_expires_in": 15552000,
                }
            )
        if form.get("grant_type") == "refresh_token":
            if status := self.fail_refresh_with.get("tiktok"):
                return self._oauth_error("internal_error", "try later", status)
            scopes, error = self._rotate("tiktok", str(form.get("refresh_token", "")))
            if error:
                return error
            body = self._grant("tiktok", scopes)
            return JSONResponse(
                {
                    **body,
                    "open_id": self.accounts["tiktok"].id,
                    "scope": ",".join(scopes),
                    "refresh_expires_in": 15552000,
                }
            )
        return self._oauth_error("unsupported_grant_type", "grant_type")

    async def tiktok_userinfo(self, request: Request) -> Response:
        if self._bearer(request, "tiktok") is None:
            return JSONResponse(
                {"data": {}, "error": {"code": "access_token_invalid", "message": "invalid", "log_id": "1"}}, 401
            )
        a = self.accounts["tiktok"]
        fields = request.query_params.get("fields", "").split(",")
        user = {"open_id": a.id, "union_id": "tt-union-alice", "display_name": a.name, "avatar_url": "https://tt/a.png"}
        if "username" in fields:
            user["username"] = a.username
        return JSONResponse({"data": {"user": user}, "error": {"code": "ok", "message": "", "log_id": "2"}})

    async def tiktok_revoke(self, request: Request) -> Response:
        form = await _form(request)
        if error := self._body_client("tiktok", form, "client_key"):
            return error
        self.revoked.add(str(form.get("token", "")))
        self.calls["tiktok.revoke"] += 1
        return JSONResponse({})

    # ------------------------------------------------------------------ Facebook

    async def facebook_authorize(self, request: Request) -> Response:
        return self._authorize(request, "facebook", client_param="client_id", separator=",")

    async def facebook_access_token(self, request: Request) -> Response:
        q = request.query_params
        client_id, secret = CLIENTS["facebook"]
        if q.get("client_id") != client_id or q.get("client_secret") != secret:
            return self._graph_error("Error validating client secret.", 1)
        if q.get("grant_type") == "fb_exchange_token":
            token = q.get("fb_exchange_token", "")
            if token not in self.access or token in self.revoked:
                return self._graph_error("Error validating access token: Session has expired")
            self.calls["facebook.exchange"] += 1
            access = self._token("facebook", "long")
            self.access[access] = "facebook"
            return JSONResponse({"access_token": access, "token_type": "bearer", "expires_in": 5183944})
        code = self._take_code("facebook", q)
        if isinstance(code, Response):
            return self._graph_error("Invalid verification code format.", 100)
        self.granted_facebook = code.scopes
        body = self._grant("facebook", code.scopes, with_refresh=False)
        return JSONResponse({**body, "expires_in": 5400})

    async def facebook_me(self, request: Request) -> Response:
        if self._bearer(request, "facebook") is None:
            return self._graph_error("Error validating access token")
        a = self.accounts["facebook"]
        return JSONResponse({"id": a.id, "name": a.name, "picture": {"data": {"url": "https://fb/p.png"}}})

    async def facebook_permissions(self, request: Request) -> Response:
        token = self._bearer(request, "facebook")
        if token is None:
            return self._graph_error("Error validating access token")
        if request.method == "DELETE":
            self.revoked.add(token)
            self.calls["facebook.revoke"] += 1
            return JSONResponse({"success": True})
        granted = [{"permission": p, "status": "granted"} for p in ["public_profile", *self.granted_facebook]]
        declined = [{"permission": p, "status": "declined"} for p in self.untick.get("facebook", set())]
        return JSONResponse({"data": granted + declined})

    async def facebook_businesses(self, request: Request) -> Response:
        if self._bearer(request, "facebook") is None:
            return self._graph_error("Error validating access token")
        if "business_management" not in self.granted_facebook:
            return self._graph_error("(#100) Missing Permission: business_management", 100, 403)
        return JSONResponse({"data": [{"id": "biz-1", "name": "Alice's Business"}]})

    async def facebook_owned_pages(self, request: Request) -> Response:
        if self._bearer(request, "facebook") is None:
            return self._graph_error("Error validating access token")
        if "business_management" not in self.granted_facebook or request.path_params["business"] != "biz-1":
            return self._graph_error("(#100) Missing Permission: business_management", 100, 403)
        page_token = self._token("facebook", "page")
        self.page_tokens[page_token] = "page-biz-1"
        return JSONResponse({"data": [{"id": "page-biz-1", "name": "Alice's Shop", "access_token": page_token}]})

    async def facebook_accounts(self, request: Request) -> Response:
        if self._bearer(request, "facebook") is None:
            return self._graph_error("Error validating access token")
        page_token = self._token("facebook", "page")
        self.page_tokens[page_token] = "page-1"
        return JSONResponse({"data": [{"id": "page-1", "name": "Alice's Page", "access_token": page_token}]})

    # ------------------------------------------------------------------ Instagram

    async def instagram_authorize(self, request: Request) -> Response:
        return self._authorize(request, "instagram", client_param="client_id", separator=",")

    async def instagram_token(self, request: Request) -> Response:
        form = await _form(request)
        if error := self._body_client("instagram", form):
            return error
        if form.get("grant_type") != "authorization_code":
            return self._oauth_error("invalid_request", "grant_type")
        code = self._take_code("instagram", form)
        if isinstance(code, Response):
            return JSONResponse({"error_type": "OAuthException", "code": 400, "error_message": "Invalid code"}, 400)
        body = self._grant("instagram", code.scopes, with_refresh=False)
        # The documented shape wraps it in data[] (Instagram's documentation): the adapter must accept it.
        return JSONResponse(
            {
                "data": [
                    {
                        "access_token": body["access_token"],
                        "user_id": self.accounts["instagram"].id,
                        "permissions": ",".join(code.scopes),
                    }
                ]
            }
        )

    async def instagram_exchange(self, request: Request) -> Response:
        q = request.query_params
        if q.get("grant_type") != "ig_exchange_token" or q.get("client_secret") != CLIENTS["instagram"][1]:
            return self._graph_error("Invalid exchange request", 100)
        if self._bearer(request, "instagram") is None:
            return self._graph_error("Error validating access token")
        access = self._token("instagram", "long")
        self.access[access] = "instagram"
        self.instagram_issued_at[access] = time.time()
        return JSONResponse({"access_token": access, "token_type": "bearer", "expires_in": 5183944})

    async def instagram_refresh(self, request: Request) -> Response:
        q = request.query_params
        if q.get("grant_type") != "ig_refresh_token":
            return self._graph_error("grant_type", 100)
        token = self._bearer(request, "instagram")
        if token is None:
            return self._graph_error("Error validating access token")
        if time.time() - self.instagram_issued_at.get(token, 0.0) < self.instagram_min_refresh_age:
            self.calls["instagram.refresh_too_young"] += 1
            return self._graph_error("The access token must be at least 24 hours old to be refreshed", 100)
        self.calls["instagram.refresh"] += 1
        access = self._token("instagram", "long")
        self.access[access] = "instagram"
        self.instagram_issued_at[access] = time.time()
        return JSONResponse({"access_token": access, "token_type": "bearer", "expires_in": 5183944})

    async def instagram_me(self, request: Request) -> Response:
        if self._bearer(request, "instagram") is None:
            return self._graph_error("Error validating access token")
        a = self.accounts["instagram"]
        return JSONResponse(
            {
                "id": "app-scoped-1",
                "user_id": a.id,
                "username": a.username,
                "name": a.name,
                "account_type": "BUSINESS",
                "profile_picture_url": "https://ig/p.png",
            }
        )

    # ------------------------------------------------------------------ wiring

    def app(self) -> Starlette:
        routes = [
            Route("/twitter/i/oauth2/authorize", self.twitter_authorize),
            Route("/twitter/2/oauth2/token", self.twitter_token, methods=["POST"]),
            Route("/twitter/2/oauth2/revoke", self.twitter_revoke, methods=["POST"]),
            Route("/twitter/2/users/me", self.twitter_me),
            Route("/linkedin/oauth/v2/authorization", self.linkedin_authorize),
            Route("/linkedin/oauth/v2/accessToken", self.linkedin_token, methods=["POST"]),
            Route("/linkedin/oauth/v2/revoke", self.linkedin_revoke, methods=["POST"]),
            Route("/linkedin/v2/userinfo", self.linkedin_userinfo),
            Route("/tiktok/v2/auth/authorize/", self.tiktok_authorize),
            Route("/tiktok/v2/oauth/token/", self.tiktok_token, methods=["POST"]),
            Route("/tiktok/v2/oauth/revoke/", self.tiktok_revoke, methods=["POST"]),
            Route("/tiktok/v2/user/info/", self.tiktok_userinfo),
            Route(f"/facebook/{GRAPH_VERSION}/dialog/oauth", self.facebook_authorize),
            Route(f"/facebook/{GRAPH_VERSION}/oauth/access_token", self.facebook_access_token),
            Route(f"/facebook/{GRAPH_VERSION}/me", self.facebook_me),
            Route(f"/facebook/{GRAPH_VERSION}/me/permissions", self.facebook_permissions, methods=["GET", "DELETE"]),
            Route(f"/facebook/{GRAPH_VERSION}/me/accounts", self.facebook_accounts),
            Route(f"/facebook/{GRAPH_VERSION}/me/businesses", self.facebook_businesses),
            Route(f"/facebook/{GRAPH_VERSION}/{{business}}/owned_pages", self.facebook_owned_pages),
            Route("/instagram/oauth/authorize", self.instagram_authorize),
            Route("/instagram/oauth/access_token", self.instagram_token, methods=["POST"]),
            Route("/instagram/access_token", self.instagram_exchange),
            Route("/instagram/refresh_access_token", self.instagram_refresh),
            Route(f"/instagram/{IG_VERSION}/me", self.instagram_me),
        ]
        return Starlette(routes=routes)

    @staticmethod
    def env(url: str) -> dict[str, str]:
        """The oauth service's variables pointing every platform at this fake at `url`."""
        env: dict[str, str] = {}
        for name, (client_id, secret) in CLIENTS.items():
            prefix = name.upper()
            env[f"{prefix}_CLIENT_ID" if name != "tiktok" else "TIKTOK_CLIENT_KEY"] = client_id
            env[f"{prefix}_CLIENT_SECRET"] = secret
        env |= {
            "TWITTER_AUTHORIZE_URL": f"{url}/twitter/i/oauth2/authorize",
            "TWITTER_TOKEN_URL": f"{url}/twitter/2/oauth2/token",
            "TWITTER_REVOKE_URL": f"{url}/twitter/2/oauth2/revoke",
            "TWITTER_API_BASE_URL": f"{url}/twitter",
            "LINKEDIN_AUTHORIZE_URL": f"{url}/linkedin/oauth/v2/authorization",
            "LINKEDIN_TOKEN_URL": f"{url}/linkedin/oauth/v2/accessToken",
            "LINKEDIN_REVOKE_URL": f"{url}/linkedin/oauth/v2/revoke",
            "LINKEDIN_USERINFO_URL": f"{url}/linkedin/v2/userinfo",
            "LINKEDIN_API_BASE_URL": f"{url}/linkedin",
            "TIKTOK_AUTHORIZE_URL": f"{url}/tiktok/v2/auth/authorize/",
            "TIKTOK_TOKEN_URL": f"{url}/tiktok/v2/oauth/token/",
            "TIKTOK_REVOKE_URL": f"{url}/tiktok/v2/oauth/revoke/",
            "TIKTOK_USERINFO_URL": f"{url}/tiktok/v2/user/info/",
            "TIKTOK_API_BASE_URL": f"{url}/tiktok",
            "FACEBOOK_API_VERSION": GRAPH_VERSION,
            "FACEBOOK_AUTHORIZE_URL": f"{url}/facebook/{{version}}/dialog/oauth",
            "FACEBOOK_TOKEN_URL": f"{url}/facebook/{{version}}/oauth/access_token",
            "FACEBOOK_API_BASE_URL": f"{url}/facebook",
            "INSTAGRAM_AUTHORIZE_URL": f"{url}/instagram/oauth/authorize",
            "INSTAGRAM_TOKEN_URL": f"{url}/instagram/oauth/access_token",
            "INSTAGRAM_EXCHANGE_URL": f"{url}/instagram",
            "INSTAGRAM_API_BASE_URL": f"{url}/instagram",
            "INSTAGRAM_API_VERSION": IG_VERSION,
        }
        return env


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (what every token endpoint here takes)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
