"""Opaque, signed, keyset-friendly page tokens and page_size rules (AIP-158)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contentpipe.common.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MAC_BYTES = 16


def page_size(requested: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 → default, above maximum → maximum, negative → InvalidArgument(page_size)."""
    if requested < 0:
        raise InvalidArgument.single("page_size", "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class PageCursor:
    """What a token carries: the last sort key seen and a fingerprint of the query's filters."""

    last: Mapping[str, Any]
    query: str = ""


class PageTokenCodec:
    """Encodes cursors as `base64url(json).base64url(hmac)`; a changed byte → InvalidArgument(page_token).

    The key is derived from a configured secret (e.g. the JWT secret) so tokens survive restarts and
    work across replicas; without one a per-process random key is used.
    """

    def __init__(self, secret: str | bytes | None = None, *, purpose: str = "page-token") -> None:
        base = secret.encode() if isinstance(secret, str) else (secret or os.urandom(32))
        self._key = hmac.new(base, purpose.encode(), hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, last: Mapping[str, Any], *, query: str = "") -> str:
        payload = json.dumps({"l": dict(last), "q": query}, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64encode(payload)}.{_b64encode(self._mac(payload))}"

    def decode(self, token: str, *, query: str = "") -> PageCursor | None:
        """None for an empty token (first page). `query` must match the one used to encode."""
        if not token:
            return None
        invalid = InvalidArgument.single("page_token", "invalid or tampered page token")
        body, sep, mac = token.partition(".")
        if not sep:
            raise invalid
        try:
            payload = _b64decode(body)
            signature = _b64decode(mac)
        except (ValueError, TypeError):
            raise invalid from None
        if not hmac.compare_digest(signature, self._mac(payload)):
            raise invalid
        data = json.loads(payload)
        if data.get("q", "") != query:
            raise InvalidArgument.single("page_token", "page token was issued for a different query")
        last = data.get("l")
        if not isinstance(last, dict):
            raise invalid
        return PageCursor(last=last, query=query)


# ---------------------------------------------------------------- keyset over (time, id), newest first
# The one cursor format of lists sorted by a timestamp and an id: {"t": ISO time, "id": id}.


def keyset_after(codec: PageTokenCodec, token: str, *, query: str) -> tuple[datetime, str] | None:
    """The (time, id) a page token continues after; None for the first page; INVALID_ARGUMENT on `page_token`
    for a tampered, foreign or malformed token."""
    cursor = codec.decode(token, query=query)
    if cursor is None:
        return None
    try:
        return datetime.fromisoformat(str(cursor.last["t"])), str(cursor.last["id"])
    except (KeyError, ValueError):
        raise InvalidArgument.single("page_token", "invalid or tampered page token") from None


def keyset_token(codec: PageTokenCodec, last_time: datetime, last_id: str, *, query: str) -> str:
    """The token of the page after the item (last_time, last_id)."""
    return codec.encode({"t": last_time.isoformat(), "id": last_id}, query=query)


def next_keyset_token(
    codec: PageTokenCodec, items: Sequence[tuple[datetime | None, str]], limit: int, *, query: str
) -> str:
    """A token for the page after the first `limit` of `items` (callers fetch limit + 1); '' on the last page."""
    if len(items) <= limit:
        return ""
    last_time, last_id = items[limit - 1]
    assert last_time is not None
    return keyset_token(codec, last_time, last_id, query=query)
