"""Unit tests: platform rules, the post state machine (never twice), rate-limit header reading, upload plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.errors import InvalidArgument
from contentpipe.oauth.adapters.publishers.calls import LimitPolicy, limit_refusal, observed_blocks
from contentpipe.oauth.adapters.publishers.linkedin import little_text
from contentpipe.oauth.adapters.publishers.tiktok import chunk_plan
from contentpipe.oauth.adapters.publishers.youtube import _offset
from contentpipe.oauth.domain.posts import (
    IllegalTransition,
    Media,
    MediaKind,
    Platform,
    Post,
    PostError,
    PostOptions,
    PostState,
    content_fingerprint,
    normalize_text,
)
from contentpipe.oauth.domain.posts_rules import NewPost, validate_post

from tests.fakes.publishing_platforms import tiktok_chunk_refusal

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
VIDEO = Media("file:///data/a.mp4", MediaKind.VIDEO, "video/mp4", 1000, 10.0)
IMAGE = Media("https://cdn.example.com/a.png", MediaKind.IMAGE, "image/png", 1000)


def fields(platform: Platform, **kwargs: Any) -> set[str]:
    post = NewPost(
        connection_id="c",
        text=str(kwargs.pop("text", "hello")),
        media=tuple(kwargs.pop("media", ())),
        options=PostOptions(**kwargs),
    )
    try:
        validate_post(post, platform)
    except InvalidArgument as err:
        return {v.field for v in err.violations}
    return set()


@pytest.mark.parametrize(
    ("platform", "limit"), [(Platform.TWITTER, 280), (Platform.LINKEDIN, 3000), (Platform.FACEBOOK, 63206)]
)
def test_text_limits(platform: Platform, limit: int) -> None:
    page = {"facebook_page_id": "1"} if platform is Platform.FACEBOOK else {}
    assert fields(platform, text="é" * limit, **page) == set()
    assert fields(platform, text="é" * (limit + 1), **page) == {"post.text"}


def test_youtube_counts_description_bytes_and_needs_a_title_and_one_video() -> None:
    ok = {"media": [VIDEO], "youtube_title": "t"}
    assert fields(Platform.GOOGLE, **ok) == set()
    assert fields(Platform.GOOGLE, text="é" * 2501, **ok) == {"post.text"}  # 5,002 bytes
    assert fields(Platform.GOOGLE, media=[VIDEO]) == {"post.options.youtube.title"}
    assert fields(Platform.GOOGLE, media=[IMAGE], youtube_title="t") == {"post.media"}
    assert fields(Platform.GOOGLE, youtube_title="x" * 101, media=[VIDEO]) == {"post.options.youtube.title"}


def test_media_count_kind_and_video_limits() -> None:
    assert fields(Platform.TWITTER, media=[IMAGE] * 5) == {"post.media"}
    assert fields(Platform.TWITTER, media=[IMAGE, VIDEO]) == {"post.media"}
    long = Media("file:///a.mp4", MediaKind.VIDEO, "video/mp4", 10, 141.0)
    assert fields(Platform.TWITTER, media=[long]) == {"post.media[0].duration_seconds"}
    short = Media("file:///a.mp4", MediaKind.VIDEO, "video/mp4", 10, 1.0)  # extended by the conformer
    assert fields(Platform.INSTAGRAM, media=[short]) == {"post.media[0].uri"}
    assert fields(Platform.TIKTOK, media=[short], tiktok_privacy_level="SELF_ONLY") == set()
    twenty_minutes = Media("file:///a.mp4", MediaKind.VIDEO, "video/mp4", 10, 1200.0)
    assert fields(Platform.TIKTOK, media=[twenty_minutes], tiktok_privacy_level="SELF_ONLY") == {
        "post.media[0].duration_seconds"
    }
    huge_image = Media("file:///a.png", MediaKind.IMAGE, "image/png", 200 * 1024 * 1024)
    assert fields(Platform.INSTAGRAM, media=[huge_image]) == {"post.media[0].size_bytes", "post.media[0].uri"}
    assert fields(Platform.INSTAGRAM, media=[IMAGE] * 11) == {"post.media"}
    wrong = Media("https://x/a.png", MediaKind.VIDEO, "image/png")
    assert fields(Platform.OUTBOX, media=[wrong]) == {"post.media[0].content_type"}
    assert fields(Platform.TIKTOK, media=[VIDEO]) == {"post.options.tiktok.privacy_level"}
    assert fields(Platform.TIKTOK, media=[VIDEO], tiktok_privacy_level="EVERYONE") == {
        "post.options.tiktok.privacy_level"
    }
    assert fields(Platform.FACEBOOK) == {"post.options.facebook.page_id"}
    assert fields(Platform.TWITTER, text="") == {"post.text"}


def new_post() -> Post:
    return Post(
        id="p1",
        owner="u",
        connection_id="c",
        platform=Platform.TWITTER,
        text="hi",
        media=(),
        options=PostOptions(),
        create_time=NOW,
        next_attempt_time=NOW,
    )


def test_a_post_whose_create_was_sent_is_never_requeued_blindly() -> None:
    post = new_post()
    post.start_attempt(NOW)
    assert post.state is PostState.PUBLISHING and post.attempts == 1
    post.arm_create(NOW)
    with pytest.raises(IllegalTransition):
        post.defer(NOW + timedelta(minutes=1), None, NOW)
    with pytest.raises(IllegalTransition):
        post.arm_create(NOW)
    error = PostError(ErrorClass.RETRYABLE, "CREATE_OUTCOME_UNKNOWN", "timeout", NOW)
    post.mark_unconfirmed(error, None)
    assert post.state.value == "UNCONFIRMED" and post.next_attempt_time is None
    with pytest.raises(IllegalTransition):
        post.cancel(NOW)
    post.resolve(published=False, platform_post_id="", permalink="", now=NOW)
    assert post.state.value == "QUEUED" and post.create_sent_time is None


def test_published_needs_an_id_and_is_terminal() -> None:
    post = new_post()
    post.start_attempt(NOW)
    with pytest.raises(IllegalTransition):
        post.mark_published("", "", NOW)
    post.mark_published("123", "https://x.com/i/web/status/123", NOW)
    assert post.state.terminal and post.published_time == NOW
    with pytest.raises(IllegalTransition):
        post.start_attempt(NOW)


def test_fingerprint_ignores_rewritten_links_and_whitespace() -> None:
    assert normalize_text("Hello  https://example.com/a world") == normalize_text("hello https://t.co/xyz world ")
    assert content_fingerprint("a b", ()) != content_fingerprint("a b", (IMAGE,))


def response(status: int, headers: dict[str, str], body: object = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json=body if body is not None else {})


def test_x_headers_block_the_account_until_the_reset() -> None:
    reset = int((NOW + timedelta(minutes=7)).timestamp())
    r = response(429, {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)})
    block = limit_refusal(Platform.TWITTER, "42", r, NOW, LimitPolicy())
    assert block is not None and block.key == "twitter:account:42" and block.until.timestamp() == reset
    ok = response(201, {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(reset)})
    assert [b.key for b in observed_blocks(Platform.TWITTER, "42", ok, NOW, LimitPolicy())] == ["twitter:account:42"]
    fine = response(201, {"x-rate-limit-remaining": "5", "x-rate-limit-reset": str(reset)})
    assert observed_blocks(Platform.TWITTER, "42", fine, NOW, LimitPolicy()) == []


def test_meta_usage_headers_and_error_codes() -> None:
    app_busy = response(200, {"x-app-usage": '{"call_count": 95, "total_cputime": 10, "total_time": 10}'})
    assert [b.key for b in observed_blocks(Platform.FACEBOOK, "p", app_busy, NOW, LimitPolicy())] == ["facebook:app"]
    buc = (
        '{"p": [{"type": "pages", "call_count": 50, "total_cputime": 5, "total_time": 5, '
        '"estimated_time_to_regain_access": 12}]}'
    )
    blocks = observed_blocks(
        Platform.INSTAGRAM, "p", response(200, {"x-business-use-case-usage": buc}), NOW, LimitPolicy()
    )
    assert [(b.key, b.until) for b in blocks] == [("instagram:account:p", NOW + timedelta(minutes=12))]
    app_limit = response(400, {}, {"error": {"code": 4, "message": "Application request limit reached"}})
    refusal = limit_refusal(Platform.INSTAGRAM, "p", app_limit, NOW, LimitPolicy())
    assert refusal is not None and refusal.key == "instagram:app"
    other = response(400, {}, {"error": {"code": 100, "message": "Invalid parameter"}})
    assert limit_refusal(Platform.FACEBOOK, "p", other, NOW, LimitPolicy()) is None


def test_retry_after_and_youtube_quota() -> None:
    r = response(429, {"retry-after": "30"})
    block = limit_refusal(Platform.LINKEDIN, "a", r, NOW, LimitPolicy())
    assert block is not None and block.until == NOW + timedelta(seconds=30)
    quota = response(403, {}, {"error": {"code": 403, "errors": [{"reason": "quotaExceeded"}]}})
    block = limit_refusal(Platform.GOOGLE, "a", quota, NOW, LimitPolicy())
    assert block is not None and block.key == "google:app" and block.until > NOW


def test_upload_plans() -> None:
    assert chunk_plan(1000, 10 * 2**20) == (1000, 1)
    assert chunk_plan(7 * 2**20, 10 * 2**20) == (7 * 2**20, 1)  # 5-10 MB: one chunk, never floor(7/10) = 0
    assert chunk_plan(64 * 2**20, 10 * 2**20) == (64 * 2**20, 1)
    assert chunk_plan(100 * 2**20 + 7, 10 * 2**20) == (10 * 2**20, 10)  # the last chunk takes the rest
    assert _offset(httpx.Response(308, headers={"range": "bytes=0-262143"})) == 262144
    assert _offset(httpx.Response(308)) == 0
    assert little_text("a_b (c) #tag @me") == r"a\_b \(c\) \#tag \@me"


@pytest.mark.parametrize("size_mb", [0.001, 4.9, 5, 7, 9.99, 10, 63, 64, 64.01, 100, 700, 4096])
@pytest.mark.parametrize("chunk_mb", [5, 10, 64])
def test_tiktok_chunk_plan_is_accepted_by_the_documented_rules(size_mb: float, chunk_mb: int) -> None:
    size = int(size_mb * 2**20)
    chunk_size, count = chunk_plan(size, chunk_mb * 2**20)
    assert tiktok_chunk_refusal(size, chunk_size, count) is None
    # the rule the fake holds is the documented one: 7 MB in 10 MB chunks is refused
    assert tiktok_chunk_refusal(7 * 2**20, 10 * 2**20, 0) is not None


def test_tiktok_photo_caption_allows_4000_characters_video_2200() -> None:
    options = {"tiktok_privacy_level": "SELF_ONLY"}
    assert fields(Platform.TIKTOK, media=[IMAGE], text="x" * 4000, **options) == set()
    assert fields(Platform.TIKTOK, media=[IMAGE], text="x" * 4001, **options) == {"post.text"}
    assert fields(Platform.TIKTOK, media=[VIDEO], text="x" * 2201, **options) == {"post.text"}
