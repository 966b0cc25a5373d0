"""Tokens at rest: AES-GCM under key ids, first key writes, every key reads, context bound, tamper detected."""

from __future__ import annotations

import base64

import pytest
from contentpipe.oauth.adapters.crypto import TokenCipher, TokenDecryptionError, parse_token_keys

pytestmark = pytest.mark.unit

K1 = "k1:" + base64.b64encode(b"a" * 32).decode()
K2 = "k2:" + base64.b64encode(b"b" * 16).decode()


def test_round_trip_never_shows_the_plaintext_and_uses_a_fresh_nonce() -> None:
    cipher = TokenCipher(parse_token_keys(K1))
    first = cipher.encrypt("secret-token-123", "connections/1/access_token")
    second = cipher.encrypt("secret-token-123", "connections/1/access_token")
    assert first.startswith("v1:k1:") and "secret-token-123" not in first and first != second
    assert cipher.decrypt(first, "connections/1/access_token") == "secret-token-123"
    assert cipher.encrypt("", "x") == "" and cipher.decrypt("", "x") == ""


def test_new_writes_use_the_first_key_and_old_keys_still_read() -> None:
    old = TokenCipher(parse_token_keys(K1)).encrypt("t", "c")
    rotated = TokenCipher(parse_token_keys(f"{K2},{K1}"))
    assert rotated.decrypt(old, "c") == "t"
    assert rotated.needs_rotation(old)
    assert rotated.encrypt("t", "c").startswith("v1:k2:")
    with pytest.raises(TokenDecryptionError, match="unknown key id 'k1'"):
        TokenCipher(parse_token_keys(K2)).decrypt(old, "c")


def test_ciphertext_moved_to_another_row_or_altered_does_not_decrypt() -> None:
    cipher = TokenCipher(parse_token_keys(K1))
    sealed = cipher.encrypt("plain-secret-xyz", "connections/1/refresh_token")
    with pytest.raises(TokenDecryptionError):
        cipher.decrypt(sealed, "connections/2/refresh_token")
    body = sealed.rsplit(":", 1)[1]
    flipped = base64.b64encode(bytes([base64.b64decode(body)[0] ^ 1]) + base64.b64decode(body)[1:]).decode()
    with pytest.raises(TokenDecryptionError) as caught:
        cipher.decrypt(f"v1:k1:{flipped}", "connections/1/refresh_token")
    assert "plain-secret-xyz" not in str(caught.value) and body not in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "at least one"),
        ("nokey", "kid:base64key"),
        ("k1:!!!", "not valid base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "16, 24 or 32 bytes"),
        (f"{K1},{K1}", "appears twice"),
    ],
)
def test_bad_key_lists_are_refused_without_echoing_keys(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_token_keys(raw)
    assert base64.b64encode(b"a" * 32).decode() not in str(caught.value)
