"""Posting with media conformance: generated media are converted for their platform and published on fakes that
refuse what the real platforms refuse (tests/fakes/media_rules.py); what no conversion can fix is refused at
CreatePost with the field and the rule. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from tests.fakes import LoopbackHTTPServer
from tests.fakes.media_rules import check
from tests.fakes.publishing_platforms import FakeInstagram, FakePlatform, FakeTikTok
from tests.fakes.publishing_tokens import FakeConnection, FakeTokens
from tests.oauth.posting.conftest import fake_env
from tests.oauth.posting.harness import posting_stack
from tests.oauth.posting.test_api import violations
from tests.support import bearer

pytestmark = pytest.mark.integration

DONE = {pb.POST_STATE_PUBLISHED, pb.POST_STATE_FAILED, pb.POST_STATE_UNCONFIRMED}
OPTIONS = pb.PlatformOptions(
    tiktok=pb.TikTokOptions(privacy_level="SELF_ONLY"),
    youtube=pb.YouTubeOptions(title="A generated clip", privacy_status="unlisted"),
    facebook=pb.FacebookOptions(page_id="42"),
)
CAPTION = "Fresh from the pipeline 🚀 a gradient that moves, made offline by contentpipe; see https://example.com/a?b=1"


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local provider's former defaults (512x288 8 fps 2 s H.264, no audio, 7 KB; a PNG), a 20-minute clip, and
    a JPEG every image spec takes."""
    folder = tmp_path_factory.mktemp("originals")
    ffmpeg("-f", "lavfi", "-i", "gradients=s=512x288:r=8:n=3:seed=7,format=yuv420p", "-frames:v", "16",
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-r", "8", "-movflags", "+faststart",
           "-y", str(folder / "local.mp4"))  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "gradients=s=1024x1024:r=1:seed=3", "-frames:v", "1", "-y", str(folder / "image.png"))
    ffmpeg("-f", "lavfi", "-i", "gradients=s=1080x1350:r=1:seed=3", "-frames:v", "1", "-y", str(folder / "photo.jpg"))
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=64x64:r=1", "-t", "1200", "-c:v", "libx264", "-preset", "ultrafast",
           "-movflags", "+faststart", "-y", str(folder / "long.mp4"))  # fmt: skip
    return folder


@pytest.fixture
def storage(tmp_path: Path, originals: Path) -> Path:
    """The originals inside the service's storage (file:// media), as generation stores them (owner-prefixed)."""
    folder = tmp_path / "data" / "generated-content" / "user-1"
    folder.mkdir(parents=True)
    for item in originals.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    return folder


@pytest.fixture
def served(originals: Path) -> Iterator[str]:
    """The originals over http (Instagram and TikTok photos fetch media by URL)."""
    app = Starlette()
    app.mount("/media", StaticFiles(directory=str(originals)))
    with LoopbackHTTPServer(app) as server:
        yield f"{server.url}/media"


def connect(tokens: FakeTokens, fake: FakePlatform, platform: str) -> str:
    pages = {"42": "page-token-42"} if platform == "facebook" else {}
    c = tokens.add(
        FakeConnection(id=f"c-{platform}", owner="user-1", platform=platform, account_id="42", token="tok", pages=pages)
    )
    fake.tokens["tok"] = "42"
    for page, token in pages.items():
        fake.tokens[token] = page
    return f"connections/{c.id}"


def instagram(fakes: dict[str, FakePlatform]) -> FakeInstagram:
    fake = fakes["instagram"]
    assert isinstance(fake, FakeInstagram)
    return fake


def video(uri: str) -> pb.Media:
    return pb.Media(uri=uri, kind=pb.MEDIA_KIND_VIDEO)


def image(uri: str) -> pb.Media:
    return pb.Media(uri=uri, kind=pb.MEDIA_KIND_IMAGE)


@pytest.mark.parametrize("platform", ["tiktok", "instagram", "linkedin", "twitter", "facebook", "google"])
async def test_local_default_video_is_conformed_and_published_on_the_strict_fake(  # noqa: PLR0917
    platform: str, database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], storage: Path, served: str
) -> None:
    assert check("tiktok", "video", (storage / "local.mp4").read_bytes()) == "frame_rate_check_failed"
    tokens = FakeTokens()
    name = connect(tokens, fakes[platform], platform)
    uri = f"{served}/local.mp4" if platform == "instagram" else (storage / "local.mp4").as_uri()
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(connection=name, text=CAPTION, media=[video(uri)], options=OPTIONS)
        post = await stack.wait(created.name, DONE, timeout=120)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    assert len(fakes[platform].posts) == 1
    assert post.media[0].uri == uri  # the stored post keeps the user's original
    if platform in ("tiktok", "linkedin"):  # converted beside the original, in the same storage
        assert (storage / "local.mp4.renditions" / f"{platform}.mp4").is_file()
    if platform == "instagram":  # an http original: converted into oauth's folder, fetched from its public URL
        (container,) = instagram(fakes).containers.values()
        assert container["params"]["video_url"].endswith("/instagram.mp4")
        assert len(list((tmp_path / "data" / "renditions" / "user-1").glob("*/instagram.mp4"))) == 1


async def test_png_becomes_a_jpeg_the_strict_instagram_fake_accepts(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], served: str
) -> None:
    tokens = FakeTokens()
    name = connect(tokens, fakes["instagram"], "instagram")
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        created = await stack.create(connection=name, text=CAPTION, media=[image(f"{served}/image.png")])
        post = await stack.wait(created.name, DONE, timeout=120)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    (container,) = instagram(fakes).containers.values()
    sent = container["params"]["image_url"]
    assert sent.endswith("/instagram.jpg") and "/renditions/user-1/" in sent
    (rendition,) = (tmp_path / "data" / "renditions" / "user-1").glob("*/instagram.jpg")
    assert rendition.read_bytes()[:3] == b"\xff\xd8\xff"


async def test_png_sent_as_it_is_is_refused_by_the_strict_instagram_fake(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], served: str
) -> None:
    tokens = FakeTokens()
    name = connect(tokens, fakes["instagram"], "instagram")
    env = {**fake_env(fakes), "OAUTH_MEDIA_CONFORM": "0"}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        created = await stack.create(connection=name, text=CAPTION, media=[image(f"{served}/image.png")])
        post = await stack.wait(created.name, DONE, timeout=120)
    assert post.state == pb.POST_STATE_FAILED
    assert "JPEG" in post.last_error.message and fakes["instagram"].posts == []


async def test_one_rendition_serves_every_post_to_the_platform(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], storage: Path
) -> None:
    tokens = FakeTokens()
    name = connect(tokens, fakes["tiktok"], "tiktok")
    uri = (storage / "local.mp4").as_uri()
    rendition = storage / "local.mp4.renditions" / "tiktok.mp4"
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens) as stack:
        first = await stack.create(connection=name, text="first", media=[video(uri)], options=OPTIONS)
        assert (await stack.wait(first.name, DONE, timeout=120)).state == pb.POST_STATE_PUBLISHED
        made = rendition.stat().st_mtime_ns
        second = await stack.create(connection=name, text="second", media=[video(uri)], options=OPTIONS)
        assert (await stack.wait(second.name, DONE, timeout=120)).state == pb.POST_STATE_PUBLISHED
    assert rendition.stat().st_mtime_ns == made  # not converted twice
    assert [p.text for p in fakes["tiktok"].posts] == ["first", "second"]


async def test_twenty_minute_video_is_refused_at_create_post_naming_field_and_rule(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], storage: Path
) -> None:
    tokens = FakeTokens()
    name = connect(tokens, fakes["tiktok"], "tiktok")
    request = pb.CreatePostRequest(
        post=pb.Post(connection=name, text=CAPTION, media=[video((storage / "long.mp4").as_uri())], options=OPTIONS)
    )
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens, worker=False) as stack:
        for validate_only in (False, True):
            request.validate_only = validate_only
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stack.stub.CreatePost(request, metadata=bearer("user-1"))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            found = violations(caught.value)
            assert list(found) == ["post.media[0]"]
            assert found["post.media[0]"].startswith("duration:") and "600" in found["post.media[0]"]
        # The same clip is fine for YouTube (no maximum that low).
        youtube = connect(tokens, fakes["google"], "google")
        request.post.connection = youtube
        request.validate_only = True
        assert (await stack.stub.CreatePost(request, metadata=bearer("user-1"))).post.connection == youtube


async def test_conversion_over_its_time_limit_fails_the_post_with_a_reason(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], storage: Path
) -> None:
    tokens = FakeTokens()
    name = connect(tokens, fakes["tiktok"], "tiktok")
    env = {**fake_env(fakes), "OAUTH_MEDIA_CONVERT_TIMEOUT": "1ms"}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
        created = await stack.create(
            connection=name, text="slow", media=[video((storage / "local.mp4").as_uri())], options=OPTIONS
        )
        post = await stack.wait(created.name, DONE, timeout=120)
    assert post.state == pb.POST_STATE_FAILED
    assert post.last_error.reason == "CONVERSION_TIMEOUT" and "OAUTH_MEDIA_CONVERT_TIMEOUT" in post.last_error.message
    assert fakes["tiktok"].posts == []
    assert not list(storage.glob("local.mp4.renditions/.*.part"))  # no half-written rendition left behind


async def test_instagram_conversion_without_a_public_url_is_refused_at_create_post(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], served: str
) -> None:
    tokens = FakeTokens()
    name = connect(tokens, fakes["instagram"], "instagram")
    env = {**fake_env(fakes), "OAUTH_RENDITIONS_PUBLIC_URL": ""}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens, worker=False) as stack:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.create(connection=name, text=CAPTION, media=[image(f"{served}/image.png")])
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "OAUTH_RENDITIONS_PUBLIC_URL" in violations(caught.value)["post.media[0]"]
        # A JPEG that already conforms needs no conversion, hence no public URL of ours.
        ok = await stack.create(connection=name, text=CAPTION, media=[image(f"{served}/photo.jpg")])
        assert ok.state == pb.POST_STATE_QUEUED


async def test_rendition_of_a_stored_original_is_written_beside_it_and_served_by_the_storage_url(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], originals: Path
) -> None:
    """Generation's local storage served over http (GENERATION_STORAGE_DIR + GENERATION_PUBLIC_BASE_URL): oauth is
    given the same pair, so an Instagram rendition lands beside the original and goes out under the same URL."""
    root = tmp_path / "storage"
    stored = root / "generated-content" / "user-1"
    stored.mkdir(parents=True)
    (stored / "image.png").write_bytes((originals / "image.png").read_bytes())
    app = Starlette()
    app.mount("/", StaticFiles(directory=str(root)))
    tokens = FakeTokens()
    name = connect(tokens, fakes["instagram"], "instagram")
    with LoopbackHTTPServer(app) as storage_server:
        env = {
            **fake_env(fakes),
            "OAUTH_RENDITIONS_PUBLIC_URL": "",
            "OAUTH_MEDIA_STORAGE_ROOT": str(root),
            "OAUTH_MEDIA_STORAGE_PUBLIC_URL": storage_server.url,
        }
        original = f"{storage_server.url}/generated-content/user-1/image.png"
        async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
            created = await stack.create(connection=name, text=CAPTION, media=[image(original)])
            post = await stack.wait(created.name, DONE, timeout=120)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    (container,) = instagram(fakes).containers.values()
    assert container["params"]["image_url"] == f"{original}.renditions/instagram.jpg"
    assert (stored / "image.png.renditions" / "instagram.jpg").read_bytes()[:3] == b"\xff\xd8\xff"


async def test_a_stalling_media_host_does_not_hold_create_post(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    release = threading.Event()

    async def stall(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"\x00\x00\x00\x18ftypmp42"  # a video's first bytes, then nothing until the test ends
            while not release.is_set():
                await asyncio.sleep(0.05)

        return StreamingResponse(body(), media_type="video/mp4")

    tokens = FakeTokens()
    name = connect(tokens, fakes["tiktok"], "tiktok")
    with LoopbackHTTPServer(Starlette(routes=[Route("/slow.mp4", stall)])) as host:
        try:
            async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens, worker=False) as st:
                request = pb.CreatePostRequest(
                    post=pb.Post(connection=name, text=CAPTION, media=[video(f"{host.url}/slow.mp4")], options=OPTIONS)
                )
                # Left to publish time once the create-time read is out of time, well within the caller's deadline.
                response = await st.stub.CreatePost(request, metadata=bearer("user-1"), timeout=30)
                assert response.post.state == pb.POST_STATE_QUEUED
        finally:
            release.set()


async def test_png_becomes_a_tiktok_photo_the_strict_fake_pulls(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform], served: str
) -> None:
    tokens = FakeTokens()
    name = connect(tokens, fakes["tiktok"], "tiktok")
    folder = tmp_path / "data" / "renditions"
    folder.mkdir(parents=True)
    app = Starlette()
    app.mount("/r", StaticFiles(directory=str(folder)))
    with LoopbackHTTPServer(app) as renditions:
        tiktok = fakes["tiktok"]
        assert isinstance(tiktok, FakeTikTok)
        tiktok.verified_prefixes = [f"{renditions.url}/r/"]
        env = {
            **fake_env(fakes),
            "OAUTH_RENDITIONS_PUBLIC_URL": f"{renditions.url}/r",
            # TikTok pulls photos only from prefixes verified for the app: ours is one.
            "OAUTH_PUBLISH_TIKTOK_VERIFIED_URL_PREFIXES": f"{renditions.url}/r/",
        }
        async with posting_stack(database_url, tmp_path, env=env, tokens=tokens) as stack:
            created = await stack.create(
                connection=name, text="a photo", media=[image(f"{served}/image.png")], options=OPTIONS
            )
            post = await stack.wait(created.name, DONE, timeout=120)
    assert post.state == pb.POST_STATE_PUBLISHED, post.last_error
    (published,) = fakes["tiktok"].posts
    assert published.extra["photo"]
    assert len(list(folder.glob("user-1/*/tiktok.jpg"))) == 1


async def test_configured_spec_overrides_reach_create_post(
    database_url: str, tmp_path: Path, fakes: dict[str, FakePlatform]
) -> None:
    tokens = FakeTokens()
    name = connect(tokens, fakes["twitter"], "twitter")
    five_minutes = pb.Media(uri="https://cdn.example.com/a.mp4", kind=pb.MEDIA_KIND_VIDEO, duration_seconds=300)
    request = pb.CreatePostRequest(post=pb.Post(connection=name, text="long", media=[five_minutes]), validate_only=True)
    async with posting_stack(database_url, tmp_path, env=fake_env(fakes), tokens=tokens, worker=False) as stack:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.stub.CreatePost(request, metadata=bearer("user-1"))
        assert "post.media[0].duration_seconds" in violations(caught.value)
    env = {**fake_env(fakes), "OAUTH_MEDIA_SPEC_OVERRIDES": '{"twitter/video": {"duration": [0.5, 600]}}'}
    async with posting_stack(database_url, tmp_path, env=env, tokens=tokens, worker=False) as stack:
        assert (await stack.stub.CreatePost(request, metadata=bearer("user-1"))).post.text == "long"
