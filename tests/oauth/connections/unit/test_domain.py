"""Connection rules: the refresh token is never wiped, the status machine, backoff, the signed state, PKCE."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.oauth.domain.connections import (
    Connection,
    ConnectionStatus,
    Platform,
    Profile,
    RefreshFailureKind,
    RefreshPolicy,
    reconnected,
    refresh_failed,
    refreshed,
)
from contentpipe.oauth.domain.connections_state import StateSigner, code_challenge, new_code_verifier
from contentpipe.oauth.domain.tokens import TokenSet, parse_scopes

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _connection(**changes: object) -> Connection:
    base = Connection(
        id="c1",
        owner="u1",
        platform=Platform.TWITTER,
        profile=Profile(account_id="42"),
        tokens=TokenSet("at-1", "rt-1", NOW + timedelta(hours=2), scopes=("a", "b")),
        granted_scopes=("a", "b"),
        create_time=NOW - timedelta(days=1),
    )
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_response_without_refresh_token_keeps_the_stored_one() -> None:
    after = refreshed(_connection(), TokenSet("at-2", "", NOW + timedelta(hours=3)), NOW)
    assert after.tokens.refresh_token == "rt-1" and after.tokens.access_token == "at-2"
    assert after.status is ConnectionStatus.ACTIVE and after.last_refresh_at == NOW
    rotated = refreshed(_connection(), TokenSet("at-3", "rt-2", None), NOW)
    assert rotated.tokens.refresh_token == "rt-2"


def test_reconnect_keeps_id_creation_and_refresh_token() -> None:
    existing = _connection(status=ConnectionStatus.NEEDS_REAUTH)
    fresh = _connection(id="new", tokens=TokenSet("at-9", ""), create_time=NOW)
    merged = reconnected(existing, fresh, NOW)
    assert (merged.id, merged.create_time) == ("c1", existing.create_time)
    assert merged.tokens.refresh_token == "rt-1" and merged.status is ConnectionStatus.ACTIVE


def test_invalid_grant_needs_reauth_and_transient_failures_back_off_then_give_up() -> None:
    policy = RefreshPolicy()
    dead = refresh_failed(_connection(), RefreshFailureKind.INVALID_GRANT, "INVALID_GRANT", "gone", NOW, policy)
    assert dead.status is ConnectionStatus.NEEDS_REAUTH and dead.last_error is not None
    failing = refresh_failed(_connection(), RefreshFailureKind.TRANSIENT, "PLATFORM_UNAVAILABLE", "503", NOW, policy)
    assert failing.status is ConnectionStatus.REFRESH_FAILING and failing.failing_since == NOW
    assert failing.next_refresh_at is not None and NOW < failing.next_refresh_at <= NOW + policy.backoff_base
    later = refresh_failed(failing, RefreshFailureKind.TRANSIENT, "X", "503", NOW + timedelta(days=1), policy)
    assert later.status is ConnectionStatus.REFRESH_FAILING and later.failing_since == NOW
    assert later.refresh_failures == 2
    gave_up = refresh_failed(later, RefreshFailureKind.TRANSIENT, "X", "503", NOW + timedelta(days=4), policy)
    assert gave_up.status is ConnectionStatus.NEEDS_REAUTH and gave_up.last_error.reason == "REFRESH_GAVE_UP"  # type: ignore[union-attr]
    assert refreshed(later, TokenSet("at-2"), NOW).failing_since is None


def test_backoff_grows_and_is_capped() -> None:
    policy = RefreshPolicy(backoff_base=timedelta(seconds=10), backoff_max=timedelta(seconds=100))
    for failures in range(1, 12):
        delay = policy.backoff(failures)
        assert timedelta(seconds=5) <= delay <= timedelta(seconds=min(100, 10 * 2 ** (failures - 1)))


def test_refresh_is_due_inside_the_margin() -> None:
    policy = RefreshPolicy(margin=timedelta(minutes=15))
    c = _connection()
    assert not policy.needs_refresh(c, NOW + timedelta(minutes=100))
    assert policy.needs_refresh(c, NOW + timedelta(minutes=106))
    assert not policy.needs_refresh(_connection(tokens=TokenSet("x")), NOW + timedelta(days=999))


def test_state_is_bound_to_user_platform_and_redirect_uri() -> None:
    signer = StateSigner(b"k")
    expires = NOW + timedelta(minutes=10)
    state = signer.sign("abc123", expires, "u1", "twitter", "https://app/cb")
    parsed = signer.parse(state)
    assert parsed is not None and parsed.expires_at == expires.replace(microsecond=0)
    assert signer.verify(parsed, "u1", "twitter", "https://app/cb")
    assert not signer.verify(parsed, "u2", "twitter", "https://app/cb")
    assert not signer.verify(parsed, "u1", "tiktok", "https://app/cb")
    assert not signer.verify(parsed, "u1", "twitter", "https://evil/cb")
    assert not StateSigner(b"other").verify(parsed, "u1", "twitter", "https://app/cb")
    for bad in ("", "a.b", "a.b.c.d", "id.notanumber.mac", "../x.1.mac"):
        assert signer.parse(bad) is None


def test_pkce_s256() -> None:
    verifier = new_code_verifier()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert code_challenge(verifier) == expected


def test_scopes_parse_space_comma_and_lists() -> None:
    assert parse_scopes("a b  c") == ("a", "b", "c")
    assert parse_scopes("a,b,a") == ("a", "b")
    assert parse_scopes(["x", "y"]) == ("x", "y")
    assert parse_scopes(None) is None


def test_instagram_tokens_are_not_refreshed_before_they_are_24_hours_old() -> None:
    policy = RefreshPolicy(margin=timedelta(days=59, hours=23))  # everything is "near expiry"
    young = _connection(
        platform=Platform.INSTAGRAM,
        tokens=TokenSet("at-1", "", NOW + timedelta(days=60)),
        create_time=NOW,
        update_time=NOW,
    )
    assert policy.refreshable_from(young) == NOW + timedelta(hours=24)
    assert not policy.needs_refresh(young, NOW + timedelta(hours=23))
    assert policy.needs_refresh(young, NOW + timedelta(hours=24))
    assert policy.refresh_due_at(young) == NOW + timedelta(hours=24)
    # the last refresh (or a reconnect, which sets update_time) restarts the 24 h
    again = refreshed(young, TokenSet("at-2", "", NOW + timedelta(days=70)), NOW + timedelta(days=10))
    assert policy.too_young(again, NOW + timedelta(days=10, hours=23))
    # other platforms have no minimum age
    assert not policy.too_young(_connection(create_time=NOW, update_time=NOW), NOW)


def test_a_refusal_of_a_young_instagram_token_does_not_need_reauth() -> None:
    policy = RefreshPolicy()
    young = _connection(
        platform=Platform.INSTAGRAM, tokens=TokenSet("at-1", "", NOW + timedelta(days=60)), update_time=NOW
    )
    for kind in RefreshFailureKind:
        after = refresh_failed(young, kind, "100", "token too young", NOW + timedelta(hours=2), policy)
        assert after.status is ConnectionStatus.ACTIVE, kind
        assert after.last_error is not None and after.last_error.reason == "TOKEN_TOO_YOUNG"
        assert after.next_refresh_at == NOW + timedelta(hours=25)
    # once it is old enough, a refusal is the platform's word again
    dead = refresh_failed(
        young, RefreshFailureKind.INVALID_GRANT, "INVALID_GRANT", "gone", NOW + timedelta(days=2), policy
    )
    assert dead.status is ConnectionStatus.NEEDS_REAUTH
