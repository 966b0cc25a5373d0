"""Acceptance: for each platform plus the outbox, CreatePost with text and a generated MP4 (an image where the
platform needs a URL) ends PUBLISHED with the platform's id and permalink, and the fake saw the documented calls.
Plus the failure modes: 5xx mid-upload, a create that times out at the client, 429 for one account, 401 refresh,
invalid_grant. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb

from tests.fakes.publishing_platforms import FakePlatform
from tests.fakes.publishing_tokens import FakeConnection, FakeTokens
from tests.oauth.posting.conftest import fake_env
from tests.oauth.posting.harness import posting_stack
from tests.support import bearer

pytestmark = pytest.mark.integration

PUBLISHED = {pb.POST_STATE_PUBLISHED}
DONE = {pb.POST_STATE_PUBLISHED, pb.POST_STATE_FAILED, pb.POST_STATE_UNCONFIRMED}


def collapsed(calls: list[str]) -> list[str]:
    """The call log with repeats in a row (chunks, polls) folded into one."""
    out: list[str] = []
    for call in calls:
        if not out or out[-1] != call:
            out.append(call)
    return out


def video(path: Path, uri: str | None = None) -> pb.Media:
    return pb.Media(
        uri=uri or path.as_uri(),
        kind=pb.MEDIA_KIND_VIDEO,
        content_type="video/mp4",
        size_bytes=path.stat().st_size,
        duration_seconds=4.0,
    )


def connection(
    tokens: FakeTokens,
    platform: str,
    *,
    owner: str = "user-1",
    account: str = "42",
    cid: str | None = None,
    **kwargs: object,
) -> str:
    c = tokens.add(
        FakeConnection(
            id=cid or f"c-{platform}-{account}",
            owner=owner,
            platform=platform,
            account_id=account,
            token=f"tok-{platform}-{account}",
            **kwargs,  # type: ignore[arg-type]
        )
    )
    return f"connections/{c.id}"


def accept(fake: FakePlatform, tokens: FakeTokens) -> None:
    for c in tokens.connections.values():
        fake.tokens[c.token] = c.account_id
        for page, token in c.pages.items():
            fake.tokens[token] = page


EXPECTED = {
    "twitter": [
        "POST /2/media/upload/initialize",
        "POST /2/media/upload/{id}/append",
        "POST /2/media/upload/{id}/finalize",
        "GET /2/media/upload?command=STATUS",
        "POST /2/tweets",
    ],
    "linkedin": [
        "POST /rest/videos?action=initializeUpload",
        "PUT {video uploadUrl}",
        "POST /rest/videos?action=finalizeUpload",
        "GET /rest/videos/{urn}",
        "POST /rest/posts",
    ],
    "instagram": [
        "POST /{ig-user-id}/media",
        "GET /{container-id}?fields=status_code",
        "POST /{ig-user-id}/media_publish",
        "GET /{ig-media-id}?fields=permalink",
    ],
    "tiktok": [
        "POST /v2/post/publish/creator_info/query/",
        "POST /v2/post/publish/video/init/",
        "PUT {upload_url}",
        "POST /v2/post/publish/status/fetch/",
    ],
    "facebook": [
        "POST graph-video /{page-id}/videos start",
        "POST graph-video /{page-id}/videos transfer",
        "POST graph-video /{page-id}/videos finish",
    ],
    "google": ["POST /upload/youtube/v3/videos?uploadType=resumable", "PUT {session} chunk"],
}
PERMALINK = {
    "twitter": "https://x.com/i/web/status/",
    "linkedin": "https://www.linkedin.com/feed/update/urn:li:share:",
    "instagram": "https://www.instagram.com/p/",
    "tiktok": "https://www.tiktok.com/@fakecreator/video/",
    "facebook": "https://www.facebook.com/42/videos/",
    "google": "https://www.youtube.com/watch?v=",
}


@pytest.mark.parametrize("platform", list(EXPECTED))
async def test_post_with_video_is_published_through_the_documented_flow(  # noqa: PLR0917
    platform: str,
    database_url: str,
    tmp_path: Path,
    fakes: dict[str, FakePlatform],
    local_media: tuple[Path, Path],
    media_server: str,
) -> None:
    tokens = FakeTokens()
    pages = {"42": "page-token-42"} if platform == "facebook" else {}
    name = connection(tokens, platform, pages=pages)
    fake = fakes[platform]
    accept(fake, tokens)
    clip = local_media[0]
    media = video(clip, f"{media_server}/clip.mp4" if platform == "instagram" else None)
    options = pb.PlatformOptions(
        tiktok=pb.TikTokOptions(privacy_level="SELF_ONLY"),
        youtube=pb.YouTubeOptions(title="A generated clip", privacy_status="unlisted"),
        facebook=pb.FacebookOptions(page_id="42"),
    )
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(connection=name, text=f"hello from {platform}", media=[media], options=options)
        # This replica has room: the post is inserted with its first attempt started.
        assert created.state == pb.POST_STATE_PUBLISHING
        assert (
            created.platform
            == {"twitter": 2, "linkedin": 3, "instagram": 1, "tiktok": 4, "google": 5, "facebook": 6}[platform]
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert collapsed(fake.calls) == EXPECTED[platform]
    assert len(fake.posts) == 1
    assert post.platform_post_id == fake.posts[0].id
    assert post.permalink.startswith(PERMALINK[platform]), post.permalink
    assert post.attempts == 1 and post.HasField("published_time")
    if platform == "google":
        assert fake.posts[0].extra["title"] == "A generated clip"
        assert fake.posts[0].extra["size"] == clip.stat().st_size
        assert fake.calls.count("PUT {session} chunk") == -(-clip.stat().st_size // 262144)
    if platform == "twitter":
        assert fake.calls.count("POST /2/media/upload/{id}/append") == -(-clip.stat().st_size // 131072)


async def test_outbox_writes_the_post_and_its_media(
    database_url: str, tmp_path: Path, local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "outbox", account="user-1")
    async with posting_stack(database_url, tmp_path, tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text="to the outbox",
            media=[video(local_media[0]), pb.Media(uri=local_media[1].as_uri(), kind=pb.MEDIA_KIND_IMAGE)],
        )
        post = await stack.wait(created.name, DONE)
        outbox = stack.data_dir / "outbox" / created.name.removeprefix("posts/")
    assert post.state == pb.POST_STATE_PUBLISHED
    assert post.permalink == (outbox / "post.json").as_uri()
    document = json.loads((outbox / "post.json").read_text())
    assert document["text"] == "to the outbox" and document["name"] == created.name
    assert (outbox / document["media"][0]["file"]).read_bytes() == local_media[0].read_bytes()
    assert (outbox / document["media"][1]["file"]).read_bytes() == local_media[1].read_bytes()


async def test_5xx_in_the_middle_of_a_youtube_upload_is_resumed_not_restarted(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "google")
    fake = fakes["google"]
    fake.fail_upload_once = True
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text="resumable",
            media=[video(local_media[0])],
            options=pb.PlatformOptions(youtube=pb.YouTubeOptions(title="Resumed")),
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert len(fake.posts) == 1 and fake.posts[0].extra["size"] == local_media[0].stat().st_size
    assert "PUT {session} probe" in fake.calls
    assert fake.calls.count("POST /upload/youtube/v3/videos?uploadType=resumable") == 1  # same session


async def test_5xx_during_x_media_upload_is_retried_before_the_create(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "twitter")
    fake = fakes["twitter"]
    fake.fail_upload_once = True
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(connection=name, text="retry the append", media=[video(local_media[0])])
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED
    assert len(fake.posts) == 1 and fake.calls.count("POST /2/tweets") == 1


async def test_create_that_times_out_at_the_client_is_reconciled_never_sent_twice(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "twitter")
    fake = fakes["twitter"]
    fake.create_delay = 2.5  # the platform creates the post, the client gives up first
    accept(fake, tokens)
    env = {**fake_env(fakes), "OAUTH_PUBLISH_REQUEST_TIMEOUT": "1", "OAUTH_PUBLISH_RECONCILE_GRACE": "3"}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        created = await stack.create(connection=name, text="did it go out? https://example.com/x")
        unconfirmed = await stack.wait(created.name, {pb.POST_STATE_UNCONFIRMED, pb.POST_STATE_PUBLISHED})
        post = await stack.wait(created.name, PUBLISHED)
    assert unconfirmed.state == pb.POST_STATE_UNCONFIRMED
    assert unconfirmed.last_error.reason == "CREATE_OUTCOME_UNKNOWN"
    assert post.platform_post_id == fake.posts[0].id
    assert len(fake.posts) == 1 and fake.calls.count("POST /2/tweets") == 1
    assert "GET /2/users/{id}/tweets" in fake.calls


async def test_instagram_crash_after_publish_is_reconciled_from_the_container_status(
    database_url: str,
    tmp_path: Path,
    fakes: dict[str, FakePlatform],
    local_media: tuple[Path, Path],
    media_server: str,
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "instagram")
    fake = fakes["instagram"]
    fake.create_delay = 2.5
    accept(fake, tokens)
    env = {**fake_env(fakes), "OAUTH_PUBLISH_REQUEST_TIMEOUT": "1"}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text="container says so",
            media=[pb.Media(uri=f"{media_server}/frame.png", kind=pb.MEDIA_KIND_IMAGE)],
        )
        post = await stack.wait(created.name, PUBLISHED)
    assert post.platform_post_id == fake.posts[0].id and len(fake.posts) == 1
    assert fake.calls.count("POST /{ig-user-id}/media_publish") == 1


async def test_one_rate_limited_account_does_not_stall_the_others(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    limited = connection(tokens, "twitter", account="1")
    others = [connection(tokens, "twitter", account=str(n)) for n in range(2, 5)]
    fake = fakes["twitter"]
    reset = time.time() + 600
    fake.limited_accounts["1"] = reset
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        first = await stack.create(connection=limited, text="limited 0")
        blocked = await stack.wait(
            first.name,
            {pb.POST_STATE_QUEUED},
            check=lambda p: p.last_error.error_class == pb.POST_ERROR_CLASS_RATE_LIMITED,
        )
        later = [await stack.create(connection=limited, text=f"limited {n}") for n in range(1, 3)]
        flowing = [
            await stack.create(connection=c, text=f"other {i}-{n}") for i, c in enumerate(others) for n in range(3)
        ]
        for post in flowing:
            assert (await stack.wait(post.name, DONE)).state == pb.POST_STATE_PUBLISHED
        still = [await stack.get(p.name) for p in later]
    assert abs(blocked.next_attempt_time.seconds - int(reset)) <= 1  # deferred to the x-rate-limit-reset
    assert all(p.state == pb.POST_STATE_QUEUED for p in still)
    assert all(p.last_error.error_class == pb.POST_ERROR_CLASS_RATE_LIMITED for p in still)
    assert fake.calls.count("POST /2/tweets") == 1 + len(flowing)  # the later ones never reached X
    assert len(fake.posts) == len(flowing)


async def test_a_401_refreshes_the_token_once_and_retries(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "linkedin", refresh_to="rotated-token")
    fake = fakes["linkedin"]
    fake.tokens["rotated-token"] = "42"  # only the refreshed token is accepted
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(connection=name, text="after a refresh")
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert tokens.refreshes == [name.removeprefix("connections/")]
    assert len(fake.posts) == 1


async def test_invalid_grant_marks_the_connection_and_fails_the_post_needs_reauth(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "twitter", invalid_grant=True)  # X answers 401; the refresh says invalid_grant
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(connection=name, text="dead grant")
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_FAILED
    assert post.last_error.error_class == pb.POST_ERROR_CLASS_NEEDS_REAUTH
    assert post.last_error.reason == "CONNECTION_NEEDS_REAUTH"
    assert tokens.connections[name.removeprefix("connections/")].status == "needs_reauth"
    assert fakes["twitter"].posts == []


async def test_daily_cap_defers_the_account_instead_of_failing(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    capped = connection(tokens, "twitter", account="1")
    other = connection(tokens, "twitter", account="2")
    accept(fakes["twitter"], tokens)
    env = {**fake_env(fakes), "OAUTH_POSTING_DAILY_CAP_TWITTER": "2"}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        first = [await stack.create(connection=capped, text=f"capped {n}") for n in range(2)]
        for post in first:
            assert (await stack.wait(post.name, DONE)).state == pb.POST_STATE_PUBLISHED
        third = await stack.create(connection=capped, text="capped 2")
        elsewhere = await stack.create(connection=other, text="other account")
        deferred = await stack.wait(
            third.name, {pb.POST_STATE_QUEUED}, check=lambda p: p.last_error.reason == "DAILY_CAP_REACHED"
        )
        assert (await stack.wait(elsewhere.name, DONE)).state == pb.POST_STATE_PUBLISHED
    assert deferred.last_error.error_class == pb.POST_ERROR_CLASS_RATE_LIMITED
    assert deferred.next_attempt_time.seconds >= int(time.time()) + 23 * 3600
    # the two capped posts are published concurrently, so only their set is fixed; the other account comes last
    published = [p.text for p in fakes["twitter"].posts]
    assert sorted(published[:2]) == ["capped 0", "capped 1"]
    assert published[2:] == ["other account"]


async def test_grant_lost_while_the_outcome_is_unknown_leaves_it_unconfirmed_for_a_person(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "twitter")
    fake = fakes["twitter"]
    fake.create_delay = 2.5
    accept(fake, tokens)

    def revoke(_post: object) -> None:  # the grant dies while X is still answering the create call
        tokens.connections[name.removeprefix("connections/")].status = "needs_reauth"

    fake.on_create = revoke
    env = {**fake_env(fakes), "OAUTH_PUBLISH_REQUEST_TIMEOUT": "1"}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        created = await stack.create(connection=name, text="may be live")
        post = await stack.wait(
            created.name, {pb.POST_STATE_UNCONFIRMED}, check=lambda p: not p.HasField("next_attempt_time")
        )
        time.sleep(1.0)
        again = await stack.get(created.name)
        resolved = await stack.stub.ResolvePost(
            pb.ResolvePostRequest(name=created.name, published=True, platform_post_id=fake.posts[0].id),
            metadata=bearer(),
        )
    assert again.state == pb.POST_STATE_UNCONFIRMED and post.last_error.reason == "CONNECTION_NEEDS_REAUTH"
    assert len(fake.posts) == 1 and fake.calls.count("POST /2/tweets") == 1
    assert resolved.post.state == pb.POST_STATE_PUBLISHED and resolved.post.platform_post_id == fake.posts[0].id


async def test_meta_business_use_case_limit_defers_that_page_only(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    busy = connection(tokens, "facebook", account="u1", pages={"p1": "page-token-1"})
    calm = connection(tokens, "facebook", account="u2", pages={"p2": "page-token-2"})
    fake = fakes["facebook"]
    fake.limited_accounts["p1"] = time.time() + 30 * 60  # Graph (#80001), regain access in 30 minutes
    accept(fake, tokens)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        limited = await stack.create(
            connection=busy, text="page one", options=pb.PlatformOptions(facebook=pb.FacebookOptions(page_id="p1"))
        )
        flowing = await stack.create(
            connection=calm, text="page two", options=pb.PlatformOptions(facebook=pb.FacebookOptions(page_id="p2"))
        )
        deferred = await stack.wait(
            limited.name,
            {pb.POST_STATE_QUEUED},
            check=lambda p: p.last_error.error_class == pb.POST_ERROR_CLASS_RATE_LIMITED,
        )
        published = await stack.wait(flowing.name, DONE)
    assert published.state == pb.POST_STATE_PUBLISHED
    assert published.permalink.startswith("https://www.facebook.com/p2_")
    assert 29 * 60 <= deferred.next_attempt_time.seconds - time.time() <= 31 * 60
    assert [p.text for p in fake.posts] == ["page two"]


async def test_youtube_last_chunk_timeout_is_settled_by_probing_the_session(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], local_media: tuple[Path, Path]
) -> None:
    tokens = FakeTokens()
    name = connection(tokens, "google")
    fake = fakes["google"]
    fake.create_delay = 2.5  # the video exists at YouTube; the answer to the last byte comes too late
    accept(fake, tokens)
    env = {**fake_env(fakes), "OAUTH_PUBLISH_REQUEST_TIMEOUT": "1"}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        created = await stack.create(
            connection=name,
            text="probe me",
            media=[video(local_media[0])],
            options=pb.PlatformOptions(youtube=pb.YouTubeOptions(title="Probed")),
        )
        post = await stack.wait(created.name, DONE)
    assert post.state == pb.POST_STATE_PUBLISHED and post.platform_post_id == fake.posts[0].id
    assert len(fake.posts) == 1 and "PUT {session} probe" in fake.calls
    assert fake.calls.count("POST /upload/youtube/v3/videos?uploadType=resumable") == 1
