"""Keyset page tokens over (time, id), signed with the service's codec."""

from __future__ import annotations

from datetime import datetime

from contentpipe.common.errors import InvalidArgument
from contentpipe.common.pagination import PageTokenCodec


def decode_after(codec: PageTokenCodec, token: str, query: str) -> tuple[datetime, str] | None:
    cursor = codec.decode(token, query=query)
    if cursor is None:
        return None
    try:
        return datetime.fromisoformat(str(cursor.last["t"])), str(cursor.last["id"])
    except (KeyError, ValueError):
        raise InvalidArgument.single("page_token", "invalid or tampered page token") from None


def next_token(codec: PageTokenCodec, items: list[tuple[datetime | None, str]], limit: int, query: str) -> str:
    """A token for the page after the first `limit` of `items` (callers fetch limit + 1); '' on the last page."""
    if len(items) <= limit:
        return ""
    items = items[:limit]
    last_time, last_id = items[-1]
    assert last_time is not None
    return codec.encode({"t": last_time.isoformat(), "id": last_id}, query=query)
