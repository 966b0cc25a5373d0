"""Forged, stale and misused bearer tokens are refused by every gRPC service of every real service process."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes import LoopbackHTTPServer
from tests.security.catalog import Rpc, all_rpcs
from tests.security.stack import Stack, service_metadata
from tests.support import TEST_JWT_SECRET, mint_token

pytestmark = pytest.mark.integration

ISSUER = "https://auth.contentpipe.test/auth/v1"
AUDIENCE = "authenticated"
REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def probe_rpcs() -> list[Rpc]:
    """One RPC per gRPC service, a List when there is one (its empty request is valid)."""
    chosen: dict[str, Rpc] = {}
    for rpc in all_rpcs():
        current = chosen.get(rpc.service.full_name)
        if current is None or (rpc.method.name.startswith("List") and not current.method.name.startswith("List")):
            chosen[rpc.service.full_name] = rpc
    return list(chosen.values())


@dataclass
class IdentityProvider:
    """A JWKS endpoint (like Supabase's) and its RS256 signing key."""

    key: rsa.RSAPrivateKey
    kid: str
    jwks_url: str

    def claims(self, user_id: str = "user-a", **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user_id,
            "role": "authenticated",
            "iat": now,
            "exp": now + 600,
            "iss": ISSUER,
            "aud": AUDIENCE,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], *, key: rsa.RSAPrivateKey | None = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any]) -> str:
    """`alg: none`: a token with no signature at all."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def hs256_with_public_key(idp: IdentityProvider, claims: dict[str, Any]) -> str:
    """Algorithm confusion: HS256 "signed" with the RS256 public key (PyJWT refuses PEM keys, so sign by hand)."""
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(idp.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "idp-key-1", "use": "sig", "alg": "RS256"})

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    with LoopbackHTTPServer(Starlette(routes=[Route("/auth/v1/.well-known/jwks.json", jwks)])) as fake:
        yield IdentityProvider(key, "idp-key-1", f"{fake.url}/auth/v1/.well-known/jwks.json")


@pytest.fixture(scope="module")
def jwks_stack(idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The four services as a Supabase deployment configures them: JWKS + issuer + audience + service secret."""
    env = {
        "CONTENTPIPE_JWKS_URL": idp.jwks_url,
        "CONTENTPIPE_JWT_ISSUER": ISSUER,
        "CONTENTPIPE_JWT_AUDIENCE": AUDIENCE,
        "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
    }
    stack = Stack(Path(tmp_path_factory.mktemp("jwks-stack")), env=env)
    try:
        yield stack.start()
    finally:
        stack.stop()


def call(stack: Stack, rpc: Rpc, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    try:
        rpc.callable(stack.channel(rpc.process))(rpc.request_class()(), metadata=metadata, timeout=10)
    except grpc.RpcError as err:
        stack.observe(err.details())
        return err.code()
    return grpc.StatusCode.OK


def bearer_of(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def attacks(idp: IdentityProvider) -> dict[str, tuple[tuple[str, str], ...]]:
    now = int(time.time())
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    good = idp.claims()
    return {
        "no authorization": (),
        "not a bearer scheme": (("authorization", f"Basic {_b64(b'user:pass')}"),),
        "garbage token": bearer_of("not.a.jwt"),
        "alg none": bearer_of(unsigned_token(good)),
        "alg none, role service, acting for a user": (
            *bearer_of(unsigned_token({**good, "role": "service"})),
            ("x-contentpipe-user", "user-b"),
        ),
        "hs256 signed with the rs256 public key": bearer_of(hs256_with_public_key(idp, good)),
        "rs256 signed by an unknown key under the known kid": bearer_of(idp.sign(good, key=stranger)),
        "payload swapped after signing": bearer_of(
            ".".join(
                [
                    idp.sign(good).split(".")[0],
                    _b64(json.dumps({**good, "sub": "user-b"}).encode()),
                    idp.sign(good).split(".")[2],
                ]
            )
        ),
        "expired": bearer_of(idp.sign(idp.claims(iat=now - 7200, exp=now - 3600))),
        "not yet valid (nbf)": bearer_of(idp.sign(idp.claims(nbf=now + 3600))),
        "issued in the future (iat)": bearer_of(idp.sign(idp.claims(iat=now + 3600, exp=now + 7200))),
        "no expiry": bearer_of(idp.sign(idp.claims(exp=None))),
        "no subject": bearer_of(idp.sign(idp.claims(sub=None))),
        "wrong issuer": bearer_of(idp.sign(idp.claims(iss="https://evil.test/auth/v1"))),
        "wrong audience": bearer_of(idp.sign(idp.claims(aud="someone-else"))),
        "service role minted without the service secret": (
            *bearer_of(mint_token("a-guessed-secret-that-is-32-bytes-long!!", "service:pipelines", role="service")),
            ("x-contentpipe-user", "user-b"),
        ),
        "service role claimed by an identity-provider user token": (
            *bearer_of(idp.sign(idp.claims(role="service"))),
            ("x-contentpipe-user", "user-b"),
        ),
        "x-contentpipe-user with a user token": (*bearer_of(idp.sign(good)), ("x-contentpipe-user", "user-b")),
    }


def test_valid_identity_provider_token_is_accepted(jwks_stack: Stack, idp: IdentityProvider) -> None:
    """Control: without it the refusals below could be an outage."""
    for rpc in probe_rpcs():
        code = call(jwks_stack, rpc, bearer_of(idp.sign(idp.claims())))
        assert code not in REFUSED | {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}, (rpc.id, code)


def test_every_forged_or_misused_token_is_refused_by_every_service(jwks_stack: Stack, idp: IdentityProvider) -> None:
    accepted: list[str] = []
    for attack, metadata in attacks(idp).items():
        for rpc in probe_rpcs():
            code = call(jwks_stack, rpc, metadata)
            if code not in REFUSED:
                accepted.append(f"{attack} → {rpc.id}: {code.name}")
    assert not accepted, "tokens that should have been refused:\n" + "\n".join(accepted)


def test_user_token_cannot_act_for_another_user_even_when_otherwise_valid(
    jwks_stack: Stack, idp: IdentityProvider
) -> None:
    metadata = (*bearer_of(idp.sign(idp.claims())), ("x-contentpipe-user", "user-b"))
    for rpc in probe_rpcs():
        assert call(jwks_stack, rpc, metadata) == grpc.StatusCode.PERMISSION_DENIED, rpc.id


def test_service_token_acting_for_a_user_is_accepted_when_issuer_and_audience_are_configured(
    jwks_stack: Stack,
) -> None:
    """Peers mint service tokens with the shared secret; a deployment with issuer/audience must still accept them."""
    for rpc in probe_rpcs():
        code = call(jwks_stack, rpc, service_metadata("user-b"))
        assert code not in REFUSED | {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}, (rpc.id, code)


def test_hs256_only_deployment_refuses_rs256_unsigned_and_foreign_secret_tokens(stack: Stack) -> None:
    """The default deployment (shared HS256 secret, no JWKS)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"sub": "user-a", "role": "authenticated", "iat": now, "exp": now + 600}
    refused = {
        "rs256 token": bearer_of(jwt.encode(claims, key, algorithm="RS256")),
        "alg none": bearer_of(unsigned_token(claims)),
        "foreign secret": bearer_of(mint_token("another-secret-that-is-32-bytes-long!!!", "user-a")),
        "expired": bearer_of(mint_token(TEST_JWT_SECRET, "user-a", ttl_seconds=-3600)),
        "hs384 with the right secret": bearer_of(jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS384")),
        "x-contentpipe-user with a user token": (
            *bearer_of(mint_token(TEST_JWT_SECRET, "user-a")),
            ("x-contentpipe-user", "user-b"),
        ),
    }
    accepted = []
    for attack, metadata in refused.items():
        for rpc in probe_rpcs():
            code = call(stack, rpc, metadata)
            if code not in REFUSED:
                accepted.append(f"{attack} → {rpc.id}: {code.name}")
    assert not accepted, "\n".join(accepted)
    for rpc in probe_rpcs():  # control
        assert call(stack, rpc, bearer_of(mint_token(TEST_JWT_SECRET, "user-a"))) not in REFUSED, rpc.id
        assert call(stack, rpc, service_metadata("user-a")) not in REFUSED, rpc.id
