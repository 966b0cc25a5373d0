"""Ids sort by time; resource names parse strictly; page tokens resist tampering; page_size rules."""

from __future__ import annotations

import base64
import json

import pytest
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.ids import format_name, is_id, new_id, parse_name, parse_name_parts
from contentpipe.common.pagination import PageTokenCodec, page_size

pytestmark = pytest.mark.unit


def test_new_ids_are_unique_hex_and_time_ordered() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(is_id(i) for i in ids)
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)  # the millisecond prefix never goes back


def test_parse_name_returns_id_and_names_the_field_on_error() -> None:
    assert parse_name("generations/{id}", "generations/abc") == "abc"
    assert parse_name_parts("pipelines/{id}/runs/{id}", "pipelines/p1/runs/r1") == ("p1", "r1")
    assert format_name("pipelines/{id}/runs/{id}", "p1", "r1") == "pipelines/p1/runs/r1"
    for bad in ["", "jobs/abc", "generations/", "generations/a/b", "generations/../x"]:
        with pytest.raises(InvalidArgument) as info:
            parse_name("generations/{id}", bad, field="generation.name")
        assert info.value.violations[0].field == "generation.name"


def test_page_size_defaults_clamps_and_rejects_negative() -> None:
    assert page_size(0) == 50
    assert page_size(10) == 10
    assert page_size(5000) == 1000
    with pytest.raises(InvalidArgument) as info:
        page_size(-1)
    assert info.value.violations[0].field == "page_size"


def test_page_token_round_trips_the_last_sort_key() -> None:
    codec = PageTokenCodec("k" * 32)
    token = codec.encode({"create_time": "2026-01-01T00:00:00Z", "id": "abc"}, query="state=ACTIVE")
    cursor = codec.decode(token, query="state=ACTIVE")
    assert cursor is not None
    assert cursor.last == {"create_time": "2026-01-01T00:00:00Z", "id": "abc"}
    assert codec.decode("") is None
    # A second codec with the same secret (another replica, a restart) accepts it too.
    assert PageTokenCodec("k" * 32).decode(token, query="state=ACTIVE") is not None


def test_tampered_or_foreign_page_token_is_invalid_argument_on_page_token() -> None:
    codec = PageTokenCodec("k" * 32)
    token = codec.encode({"id": "abc"})
    _body, mac = token.split(".")
    forged_body = base64.urlsafe_b64encode(json.dumps({"l": {"id": "zzz"}, "q": ""}).encode()).decode().rstrip("=")
    for bad in [f"{forged_body}.{mac}", token[:-2] + "AA", "garbage", PageTokenCodec("other" * 8).encode({"id": "a"})]:
        with pytest.raises(InvalidArgument) as info:
            codec.decode(bad)
        assert info.value.violations[0].field == "page_token"
    with pytest.raises(InvalidArgument, match="different query"):
        codec.decode(token, query="state=PAUSED")


def test_keyset_tokens_round_trip_and_refuse_other_queries_and_shapes() -> None:
    from datetime import UTC, datetime

    from contentpipe.common.pagination import keyset_after, keyset_token, next_keyset_token

    codec = PageTokenCodec("secret")
    when = datetime(2026, 1, 1, 12, tzinfo=UTC)
    token = keyset_token(codec, when, "abc", query="q1")
    assert keyset_after(codec, token, query="q1") == (when, "abc")
    assert keyset_after(codec, "", query="q1") is None
    with pytest.raises(InvalidArgument) as caught:
        keyset_after(codec, token, query="q2")
    assert caught.value.violations[0].field == "page_token"
    with pytest.raises(InvalidArgument):
        keyset_after(codec, codec.encode({"create_time": when.isoformat(), "id": "abc"}, query="q1"), query="q1")
    items = [(when, "c"), (when, "b"), (when, "a")]
    assert next_keyset_token(codec, items, 3, query="q1") == ""
    assert keyset_after(codec, next_keyset_token(codec, items, 2, query="q1"), query="q1") == (when, "b")
