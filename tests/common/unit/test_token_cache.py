"""The verifier's cache of verified tokens: repeated calls skip the JWT work, never its checks."""

from __future__ import annotations

import time

import jwt
import pytest
from contentpipe.common.auth import TokenVerifier, mint_token
from contentpipe.common.errors import Unauthenticated

SECRET = "a-test-secret-of-at-least-32-bytes!!"


async def test_a_cached_token_still_expires() -> None:
    verifier = TokenVerifier(secret=SECRET, leeway_seconds=0)
    now = int(time.time())
    token = jwt.encode({"sub": "u1", "role": "authenticated", "iat": now, "exp": now + 1}, SECRET, algorithm="HS256")
    assert (await verifier.verify(token))["sub"] == "u1"
    assert (await verifier.verify(token))["sub"] == "u1"  # from the cache
    time.sleep(max(0.0, now + 1 - time.time()) + 0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        await verifier.verify(token)


async def test_only_the_exact_verified_token_is_served_from_the_cache() -> None:
    verifier = TokenVerifier(secret=SECRET)
    token = mint_token(SECRET, "u1")
    await verifier.verify(token)
    header, _payload, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"sub":"u2","role":"authenticated","exp":9999999999}').decode()
    with pytest.raises(Unauthenticated):
        await verifier.verify(f"{header}.{forged_payload}.{signature}")
    with pytest.raises(Unauthenticated):
        await verifier.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert (await verifier.verify(token))["sub"] == "u1"


async def test_the_cache_is_bounded() -> None:
    verifier = TokenVerifier(secret=SECRET)
    tokens = [mint_token(SECRET, f"user-{n}") for n in range(5000)]
    for token in tokens:
        await verifier.verify(token)
    assert len(verifier._verified) <= 4096
    assert (await verifier.verify(tokens[0]))["sub"] == "user-0"  # evicted, verified again
