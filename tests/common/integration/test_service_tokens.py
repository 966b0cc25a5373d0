"""Service tokens next to an identity provider: the service secret alone grants the service role."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import jwt
import pytest
from contentpipe.common.auth import TokenVerifier, mint_token
from contentpipe.common.channels import ServiceToken
from contentpipe.common.errors import PermissionDenied, Unauthenticated
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes import LoopbackHTTPServer
from tests.support import TEST_JWT_SECRET

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test/auth/v1"
AUDIENCE = "authenticated"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def verifier() -> Iterator[TokenVerifier]:
    """Configured like a Supabase deployment: JWKS + issuer + audience, plus the shared service secret."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    with LoopbackHTTPServer(Starlette(routes=[Route("/jwks.json", jwks)])) as fake:
        yield TokenVerifier(secret=TEST_JWT_SECRET, jwks_url=f"{fake.url}/jwks.json", issuer=ISSUER, audience=AUDIENCE)


def _idp_token(**claims: object) -> str:
    now = int(time.time())
    base = {"sub": "user-a", "role": "authenticated", "exp": now + 600, "iat": now, "iss": ISSUER, "aud": AUDIENCE}
    return jwt.encode({**base, **claims}, KEY, algorithm="RS256", headers={"kid": "k1"})


async def test_peer_service_token_is_accepted_although_it_names_no_issuer_or_audience(
    verifier: TokenVerifier,
) -> None:
    metadata = ServiceToken(TEST_JWT_SECRET, "pipelines").peer_call_metadata("user-b")
    principal, _ = await verifier.principal_for(metadata)
    assert (principal.user_id, principal.role, principal.on_behalf_of_service) == ("user-b", "service", True)


async def test_identity_provider_token_claiming_the_service_role_is_refused(verifier: TokenVerifier) -> None:
    assert (await verifier.verify(_idp_token()))["sub"] == "user-a"  # control
    with pytest.raises(PermissionDenied):
        await verifier.verify(_idp_token(role="service"))
    acting = (("authorization", f"Bearer {_idp_token(role='service')}"), ("x-contentpipe-user", "user-b"))
    with pytest.raises(PermissionDenied):
        await verifier.principal_for(acting)


async def test_hs256_user_tokens_still_need_the_configured_issuer_and_audience(verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated):
        await verifier.verify(mint_token(TEST_JWT_SECRET, "user-a"))
    token = mint_token(TEST_JWT_SECRET, "user-a", issuer=ISSUER, audience=AUDIENCE)
    assert (await verifier.verify(token))["sub"] == "user-a"


async def test_service_role_with_a_foreign_secret_or_expired_is_refused(verifier: TokenVerifier) -> None:
    with pytest.raises(Unauthenticated):
        await verifier.verify(mint_token("another-secret-that-is-32-bytes-long!!!", "service:x", role="service"))
    with pytest.raises(Unauthenticated):
        await verifier.verify(mint_token(TEST_JWT_SECRET, "service:x", role="service", ttl_seconds=-3600))
