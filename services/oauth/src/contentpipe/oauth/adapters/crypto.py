"""AES-GCM encryption of tokens at rest under key ids, so keys can rotate (OAUTH_TOKEN_KEYS)."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREFIX = "v1"


class TokenDecryptionError(Exception):
    """A stored value could not be decrypted (unknown key id or tampered ciphertext). Carries no secret."""


@dataclass(frozen=True, slots=True)
class TokenKey:
    kid: str
    key: bytes  # 16, 24 or 32 bytes


def parse_token_keys(raw: str) -> list[TokenKey]:
    """`kid:base64key,kid2:base64key2` → keys (first one writes). ValueError with a message naming no key."""
    keys: list[TokenKey] = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        kid, sep, encoded = entry.partition(":")
        if not sep or not kid or ":" in kid:
            raise ValueError("each entry must be kid:base64key")
        try:
            padded = encoded + "=" * (-len(encoded) % 4)
            key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {kid!r} is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise ValueError(f"key {kid!r} must decode to 16, 24 or 32 bytes, got {len(key)}")
        if any(k.kid == kid for k in keys):
            raise ValueError(f"key id {kid!r} appears twice")
        keys.append(TokenKey(kid, key))
    if not keys:
        raise ValueError("at least one kid:base64key entry is required")
    return keys


def generate_key_entry(kid: str = "local") -> str:
    return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


class TokenCipher:
    """Encrypts with the first key; decrypts with whichever key id the value names.

    Values look like `v1:<kid>:<base64(nonce ‖ ciphertext ‖ tag)>`. `context` (e.g. the row id and column) is
    bound as associated data, so a ciphertext copied into another row or column does not decrypt.
    """

    def __init__(self, keys: Sequence[TokenKey]) -> None:
        if not keys:
            raise ValueError("no token keys")
        self._write = keys[0]
        self._keys = {k.kid: AESGCM(k.key) for k in keys}

    def encrypt(self, plaintext: str, context: str) -> str:
        if not plaintext:
            return ""
        nonce = os.urandom(12)
        sealed = self._keys[self._write.kid].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_PREFIX}:{self._write.kid}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, value: str, context: str) -> str:
        if not value:
            return ""
        prefix, kid, body = [*value.split(":", 2), "", ""][:3]
        aead = self._keys.get(kid)
        if prefix != _PREFIX or aead is None:
            raise TokenDecryptionError(f"stored token is under unknown key id {kid!r}")
        try:
            raw = base64.b64decode(body, validate=True)
            return aead.decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise TokenDecryptionError(f"stored token under key id {kid!r} failed authentication") from None

    def key_id_of(self, value: str) -> str | None:
        if not value:
            return None
        return value.split(":", 2)[1] if value.count(":") >= 2 else None

    def needs_rotation(self, value: str) -> bool:
        kid = self.key_id_of(value)
        return kid is not None and kid != self._write.kid
