"""RS256 tokens verified through a JWKS endpoint (a loopback fake), and algorithm pinning."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from contentpipe.common.auth import TokenVerifier
from contentpipe.common.errors import Unauthenticated
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes import LoopbackHTTPServer

pytestmark = pytest.mark.integration


async def test_rs256_token_from_jwks_is_accepted_and_hs256_is_refused_without_secret() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse({"keys": [jwk]})

    claims = {"sub": "user-5", "role": "authenticated", "exp": int(time.time()) + 60, "iss": "https://issuer.test"}
    with LoopbackHTTPServer(Starlette(routes=[Route("/.well-known/jwks.json", jwks)])) as fake:
        verifier = TokenVerifier(
            secret=None, jwks_url=f"{fake.url}/.well-known/jwks.json", issuer="https://issuer.test"
        )
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        assert (await verifier.verify(token))["sub"] == "user-5"
        wrong_issuer = jwt.encode({**claims, "iss": "https://evil.test"}, key, algorithm="RS256", headers={"kid": "k1"})
        with pytest.raises(Unauthenticated):
            await verifier.verify(wrong_issuer)
        # An HS256 token "signed" with the public key (algorithm confusion) is refused outright.
        with pytest.raises(Unauthenticated, match="algorithm"):
            await verifier.verify(jwt.encode(claims, "x" * 32, algorithm="HS256"))
