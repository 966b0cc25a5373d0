"""Each platform's published rules against fakes that enforce them: what a post sends, and
the clear FAILED outcome (our reason code, a message naming the fix) for what only an operator can fix.
Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb

from tests.fakes.publishing_platforms import FakeFacebook, FakePlatform, FakeTikTok, FakeYouTube
from tests.fakes.publishing_tokens import FakeTokens
from tests.oauth.posting.conftest import fake_env
from tests.oauth.posting.harness import ffmpeg, posting_stack
from tests.oauth.posting.test_publishing import DONE, accept, connection, video
from tests.support import bearer

pytestmark = pytest.mark.integration

CAPTION = "Sunrise over the bay 🌅 made with contentpipe, read more at https://example.com/blog/sunrise-over-the-bay"


def tiktok(fakes: dict[str, FakePlatform]) -> FakeTikTok:
    fake = fakes["tiktok"]
    assert isinstance(fake, FakeTikTok)
    return fake


async def test_tiktok_photo_post_puts_the_caption_in_description_and_is_pulled_from_a_verified_prefix(
    database_url: str,
    tmp_path: Path,
    fakes: dict[str, FakePlatform],
    media_server: str,
    media_files: tuple[Path, Path],
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "tiktok")
    fake = tiktok(fakes)
    fake.verified_prefixes = [f"{media_server}/"]
    accept(fake, tokens)
    caption = "x" * 3000  # over a video title's 2,200 but within a photo description's 4,000
    env = {**fake_env(fakes), "OAUTH_PUBLISH_TIKTOK_VERIFIED_URL_PREFIXES": f"{media_server}/"}
    photo = media_files[0].parent / "frame.jpg"  # already what TikTok takes (JPEG, <= 1080p): no rendition
    if not photo.exists():
        ffmpeg("-i", str(media_files[1]), "-y", str(photo))
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text=caption,
            media=[pb.Media(uri=f"{media_server}/frame.jpg", kind=pb.MEDIA_KIND_IMAGE)],
            options=pb.PlatformOptions(tiktok=pb.TikTokOptions(privacy_level="SELF_ONLY")),
            ai_generated=True,
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert "POST /v2/post/publish/content/init/" in fake.calls
    info = fake.posts[0].extra["post_info"]
    assert info["description"] == caption and "title" not in info
    assert info["is_aigc"] is True
    assert fake.posts[0].extra["source"] == "PULL_FROM_URL"


async def test_tiktok_photo_from_an_unverified_url_fails_naming_the_fix_without_calling_init(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], media_server: str
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "tiktok")
    fake = tiktok(fakes)
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text=CAPTION,
            media=[pb.Media(uri=f"{media_server}/frame.png", kind=pb.MEDIA_KIND_IMAGE)],
            options=pb.PlatformOptions(tiktok=pb.TikTokOptions(privacy_level="SELF_ONLY")),
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_FAILED
    assert post.last_error.reason == "TIKTOK_URL_NOT_VERIFIED"
    assert "OAUTH_PUBLISH_TIKTOK_VERIFIED_URL_PREFIXES" in post.last_error.message
    assert "developer portal" in post.last_error.message
    assert not fake.posts and "POST /v2/post/publish/content/init/" not in fake.calls


async def test_tiktok_video_outside_verified_prefixes_is_uploaded_as_a_file_with_is_aigc(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "tiktok")
    fake = tiktok(fakes)
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text=CAPTION,
            media=[video(local_media[0])],
            options=pb.PlatformOptions(tiktok=pb.TikTokOptions(privacy_level="SELF_ONLY")),
            ai_generated=True,
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    extra = fake.posts[0].extra
    assert extra["source"] == "FILE_UPLOAD"
    assert extra["post_info"]["title"] == CAPTION and extra["post_info"]["is_aigc"] is True
    upload = fake.publishes[extra["publish_id"]]
    assert upload["received"] == upload["size"] > 0


async def test_tiktok_public_post_from_an_unaudited_app_fails_naming_the_audit(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "tiktok")
    fake = tiktok(fakes)
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text=CAPTION,
            media=[video(local_media[0])],
            options=pb.PlatformOptions(tiktok=pb.TikTokOptions(privacy_level="PUBLIC_TO_EVERYONE")),
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_FAILED
    assert post.last_error.error_class == pb.POST_ERROR_CLASS_REJECTED_BY_PLATFORM
    assert post.last_error.reason == "TIKTOK_APP_NOT_AUDITED"
    assert "audit" in post.last_error.message and "SELF_ONLY" in post.last_error.message
    assert not fake.posts  # refused at init: nothing was created


async def test_x_counts_text_weighted_at_create_post_and_publishes_a_caption_with_emoji_and_url(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "twitter")
    fake = fakes["twitter"]
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        # 141 emoji are 282 weighted characters: refused though len() is 141
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.create(connection=name, text="🌅" * 141)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "282 weighted characters" in str(caught.value.details())
        # a long URL counts 23: 250 letters + a space + a 300-character URL is 274 weighted
        long_url = "x" * 250 + " https://example.com/" + "p" * 280
        ok = await stack.stub.CreatePost(
            pb.CreatePostRequest(post=pb.Post(connection=name, text=long_url), validate_only=True), metadata=bearer()
        )
        assert ok.post.state == pb.POST_STATE_QUEUED
        created = await stack.create(connection=name, text=CAPTION, media=[video(local_media[0])], ai_generated=True)
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert fake.posts[0].text == CAPTION and fake.posts[0].extra["made_with_ai"] is True


async def test_youtube_marks_ai_content_as_synthetic_media(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "google")
    fake = fakes["google"]
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text=CAPTION,
            media=[video(local_media[0])],
            options=pb.PlatformOptions(youtube=pb.YouTubeOptions(title="Sunrise 🌅 over the bay")),
            ai_generated=True,
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert fake.posts[0].extra["status"]["containsSyntheticMedia"] is True
    assert fake.posts[0].text == CAPTION


async def test_linkedin_post_waits_for_the_image_to_be_available_then_creates_it_once(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "linkedin")
    fake = fakes["linkedin"]
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text=CAPTION,
            media=[pb.Media(uri=local_media[1].as_uri(), kind=pb.MEDIA_KIND_IMAGE, content_type="image/png")],
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert len(fake.posts) == 1 and post.platform_post_id == fake.posts[0].id
    # the member token may not read the image's status; the create was refused (not AVAILABLE) and sent again
    assert "GET /rest/images/{urn}" in fake.calls
    assert fake.calls.count("POST /rest/posts") >= 2


async def test_linkedin_unknown_outcome_is_left_to_a_person_without_listing_posts(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "linkedin")
    fake = fakes["linkedin"]
    fake.create_delay = 2.5  # the post is created, the client gives up first
    accept(fake, tokens)
    env = {**fake_env(fakes), "OAUTH_PUBLISH_REQUEST_TIMEOUT": "1"}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        created = await stack.create(connection=name, text="did it go out?")
        post = await stack.wait(
            created.name,
            {pb.POST_STATE_UNCONFIRMED},
            check=lambda p: p.last_error.reason == "LINKEDIN_OUTCOME_UNKNOWN" and not p.HasField("next_attempt_time"),
        )
    assert "ResolvePost" in post.last_error.message
    assert fake.calls.count("POST /rest/posts") == 1 and len(fake.posts) == 1
    assert "GET /rest/posts?q=author" not in fake.calls


async def test_facebook_video_goes_to_the_graph_video_host_in_chunks_with_the_page_token(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "facebook", pages={"42": "page-token-42"})
    fake = fakes["facebook"]
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text=CAPTION,
            media=[video(local_media[0])],
            options=pb.PlatformOptions(facebook=pb.FacebookOptions(page_id="42")),
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert fake.posts[0].text == CAPTION and fake.posts[0].extra["size"] > 0
    assert fake.calls.count("POST graph-video /{page-id}/videos transfer") >= 2  # streamed in Graph's chunks
    assert "POST /{page-id}/videos" not in fake.calls  # never a file upload to the graph host


@pytest.mark.parametrize("missing", ["page_token", "permission"])
async def test_facebook_page_without_publish_permission_fails_naming_the_fix(
    missing: str, database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "facebook", pages={"42": "" if missing == "page_token" else "page-token-42"})
    fake = fakes["facebook"]
    accept(fake, tokens)
    fake.tokens["tok-facebook-42"] = "42"  # the user token would be accepted: it must not be used instead
    assert isinstance(fake, FakeFacebook)
    fake.no_publish_permission = {"42"} if missing == "permission" else set()
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name, text=CAPTION, options=pb.PlatformOptions(facebook=pb.FacebookOptions(page_id="42"))
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_FAILED
    assert post.last_error.reason == "FACEBOOK_PAGE_PERMISSION_MISSING"
    assert "pages_manage_posts" in post.last_error.message
    assert not fake.posts


async def test_youtube_upload_without_the_upload_scope_fails_naming_the_scope(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "google")
    fake = fakes["google"]
    assert isinstance(fake, FakeYouTube)
    fake.upload_scope_granted = False
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text=CAPTION,
            media=[video(local_media[0])],
            options=pb.PlatformOptions(youtube=pb.YouTubeOptions(title="Sunrise")),
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_FAILED
    assert post.last_error.reason == "YOUTUBE_SCOPE_MISSING"
    assert "youtube.upload" in post.last_error.message and "reconnect" in post.last_error.message
    assert not fake.posts
