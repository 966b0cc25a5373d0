"""The OAuth `state` parameter: opaque, HMAC-signed, bound to user, platform and redirect URI, short-lived;
and PKCE (S256) verifiers and challenges."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

STATE_TTL = timedelta(minutes=10)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class ParsedState:
    id: str
    expires_at: datetime
    signature: str


class StateSigner:
    """`state` = `<id>.<expiry unix seconds>.<mac>`, mac = HMAC-SHA256(key, id|expiry|owner|platform|redirect_uri).

    The id names the server-side row (single use, PKCE verifier); the mac proves we issued it for exactly that
    user, platform and redirect URI, so a tampered, foreign or re-targeted state is refused before the row is
    touched.
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"contentpipe-oauth-state", hashlib.sha256).digest()

    def _mac(self, state_id: str, expires: int, owner: str, platform: str, redirect_uri: str) -> str:
        message = "\x1f".join([state_id, str(expires), owner, platform, redirect_uri]).encode()
        return _b64(hmac.new(self._key, message, hashlib.sha256).digest())

    def sign(self, state_id: str, expires_at: datetime, owner: str, platform: str, redirect_uri: str) -> str:
        expires = int(expires_at.timestamp())
        return f"{state_id}.{expires}.{self._mac(state_id, expires, owner, platform, redirect_uri)}"

    @staticmethod
    def parse(state: str) -> ParsedState | None:
        parts = state.split(".")
        if len(parts) != 3 or not parts[0].isalnum() or not parts[1].isdigit() or len(parts[0]) > 64:
            return None
        return ParsedState(parts[0], datetime.fromtimestamp(int(parts[1]), UTC), parts[2])

    def verify(self, parsed: ParsedState, owner: str, platform: str, redirect_uri: str) -> bool:
        expected = self._mac(parsed.id, int(parsed.expires_at.timestamp()), owner, platform, redirect_uri)
        return hmac.compare_digest(expected, parsed.signature)


def new_code_verifier() -> str:
    """RFC 7636: 43-128 characters from the unreserved set; 64 random bytes give 86."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode()).digest())
