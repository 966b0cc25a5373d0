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
