"""Bearer-JWT authentication for every RPC (except health and reflection) and the current Principal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import jwt
from contentpipe.common._handlers import wrap_handler
from contentpipe.common.context import authorization_var, user_id_var
from contentpipe.common.errors import PermissionDenied, Unauthenticated

SERVICE_ROLE = "service"
ACT_AS_USER_HEADER = "x-contentpipe-user"
EXEMPT_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call acts for. `on_behalf_of_service` is True when a service token named the user."""

    user_id: str
    role: str
    on_behalf_of_service: bool = False


_principal_var: ContextVar[Principal | None] = ContextVar("contentpipe_principal", default=None)


def current_principal() -> Principal:
    """The principal of the call being served; Unauthenticated outside an authenticated call."""
    principal = _principal_var.get()
    if principal is None:
        raise Unauthenticated("no authenticated principal for this call")
    return principal


def set_principal(principal: Principal | None) -> object:
    """Set the principal (tests and workers acting for a user); returns a token for `reset_principal`."""
    user_id_var.set(principal.user_id if principal else None)
    return _principal_var.set(principal)


def reset_principal(token: object) -> None:
    _principal_var.reset(token)  # type: ignore[arg-type]


def mint_token(
    secret: str,
    user_id: str,
    role: str = "authenticated",
    ttl_seconds: float = 3600,
    *,
    issuer: str | None = None,
    audience: str | None = None,
) -> str:
    """An HS256 token in the Supabase shape (`sub`, `role`); for tests, the CLI and service tokens."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "role": role, "iat": now, "exp": now + int(ttl_seconds)}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


_VERIFIED_CACHE_SIZE = 4096


class TokenVerifier:
    """Verifies bearer tokens with the configured HS256 secret and/or a JWKS endpoint (RS256/ES256)."""

    def __init__(
        self,
        *,
        secret: str | None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: float = 5.0,
    ) -> None:
        if secret is None and jwks_url is None:
            raise ValueError("a JWT secret or a JWKS URL is required")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300) if jwks_url else None
        allowed: list[str] = []
        if secret is not None:
            allowed.append("HS256")
        if jwks_url is not None:
            allowed.extend(_ASYMMETRIC_ALGORITHMS)
        self.allowed_algorithms: Sequence[str] = tuple(allowed)
        # Verified tokens and their expiry: a peer or a client sends the same token for many calls, and three JWT
        # decodes per call were a visible share of every service's CPU. A hit still checks the expiry.
        self._verified: dict[str, tuple[dict[str, Any], float]] = {}

    async def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims or raise Unauthenticated (the token itself is never echoed)."""
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() <= cached[1] + self._leeway:
                return cached[0]
            del self._verified[token]
        claims = await self._verify(token)
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (claims, float(claims["exp"]))
        return claims

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed bearer token", reason="TOKEN_MALFORMED") from None
        algorithm = header.get("alg")
        if algorithm not in self.allowed_algorithms:
            raise Unauthenticated(f"token algorithm {algorithm!r} is not accepted", reason="TOKEN_ALGORITHM_REJECTED")
        key: Any
        algorithm = str(algorithm)
        issuer, audience = self._issuer, self._audience
        if algorithm == "HS256":
            key = self._secret
            if _claims_service_role(token):
                # Peers mint service tokens with the shared service secret (channels.ServiceToken); that secret
                # is what authenticates them. The configured issuer/audience describe the identity provider's
                # user tokens, which service tokens are not, so they are not asked of them.
                issuer, audience = None, None
        else:
            assert self._jwks is not None
            try:
                # PyJWKClient does blocking HTTP (cached afterwards): keep it off the event loop.
                key = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            except jwt.PyJWKClientError:
                raise Unauthenticated("token signing key not found", reason="TOKEN_KEY_UNKNOWN") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=audience,
                issuer=issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid", reason="TOKEN_SIGNATURE_INVALID") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token rejected: {exc}", reason="TOKEN_INVALID") from None
        if claims.get("role") == SERVICE_ROLE and algorithm != "HS256":
            # Only the service secret grants the service role (act for any user, see every user's jobs); an
            # identity provider's token claiming it is refused rather than trusted or silently downgraded.
            raise PermissionDenied(
                "the service role is only granted to service tokens", reason="SERVICE_ROLE_FORBIDDEN"
            )
        return claims

    async def principal_for(self, metadata: Sequence[tuple[str, str | bytes]]) -> tuple[Principal, str]:
        """Authenticate call metadata; returns the principal and the raw authorization header."""
        values = {key.lower(): value for key, value in metadata if isinstance(value, str)}
        header = values.get("authorization")
        if not header:
            raise Unauthenticated("missing authorization metadata (expected 'Bearer <JWT>')", reason="TOKEN_MISSING")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("authorization metadata must be 'Bearer <JWT>'", reason="TOKEN_MALFORMED")
        claims = await self.verify(token.strip())
        role = str(claims.get("role") or "authenticated")
        subject = str(claims["sub"])
        acting_for = values.get(ACT_AS_USER_HEADER)
        if acting_for:
            if role != SERVICE_ROLE:
                raise PermissionDenied(
                    f"only service tokens may send {ACT_AS_USER_HEADER}", reason="ACT_AS_USER_FORBIDDEN"
                )
            return Principal(user_id=acting_for, role=role, on_behalf_of_service=True), header
        return Principal(user_id=subject, role=role), header


def _claims_service_role(token: str) -> bool:
    """Whether the (not yet verified) payload claims the service role; only picks the checks to apply."""
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("role") == SERVICE_ROLE
    except jwt.PyJWTError:
        return False  # the verifying decode reports what is wrong with the token


def is_exempt(method: str) -> bool:
    return method.startswith(EXEMPT_METHOD_PREFIXES)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Requires a valid bearer token; raises Unauthenticated/PermissionDenied for the error interceptor."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if is_exempt(handler_call_details.method):
            return handler
        metadata = tuple(handler_call_details.invocation_metadata or ())
        verifier = self._verifier

        async def authenticate(request: Any, context: Any, call: Callable[[], Awaitable[Any]]) -> Any:
            principal, header = await verifier.principal_for(metadata)
            principal_token = set_principal(principal)
            auth_token = authorization_var.set(header)
            try:
                return await call()
            finally:
                authorization_var.reset(auth_token)
                reset_principal(principal_token)

        # An unknown method has no handler; grpc answers UNIMPLEMENTED for it.
        return wrap_handler(handler, authenticate)  # type: ignore[return-value]
