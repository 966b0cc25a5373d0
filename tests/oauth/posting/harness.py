"""Posting stack for integration tests: real database, real gRPC server on a free port, the real queue worker and
publishers (httpx) pointed at loopback fakes, and an in-memory TokenProvider in place of the connections half."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import contentpipe.oauth
import grpc
import imageio_ffmpeg  # type: ignore[import-untyped]
import sqlalchemy as sa
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from contentpipe.api.oauth.v1 import posting_service_pb2_grpc
from contentpipe.common.database import create_engine, run_migrations, version_table_for
from contentpipe.common.server import build_server
from contentpipe.common.settings import load_common_settings
from contentpipe.oauth.adapters.publishers.settings import load_posting_config
from contentpipe.oauth.posting_bootstrap import PostingApplication, build_posting
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tests.fakes import LoopbackHTTPServer
from tests.fakes.publishing_platforms import FakePlatform
from tests.fakes.publishing_tokens import FakeTokens
from tests.support import TEST_JWT_SECRET, bearer, free_port

MIGRATIONS = Path(contentpipe.oauth.__file__).parent / "migrations"
VERSION_TABLE = version_table_for("oauth")

FAST = {
    "OAUTH_PUBLISH_POLL_INTERVAL": "0.05",
    "OAUTH_PUBLISH_POLL_MAX": "0.1",
    "OAUTH_POSTING_POLL_INTERVAL": "0.1",
    "OAUTH_POSTING_LEASE": "5",
    "OAUTH_POSTING_BACKOFF": "0.2",
    "OAUTH_POSTING_RECONCILE_DELAY": "0.3",
    "OAUTH_PUBLISH_RECONCILE_GRACE": "2",
    "OAUTH_PUBLISH_X_CHUNK_BYTES": "131072",
    "OAUTH_PUBLISH_YOUTUBE_CHUNK_BYTES": "262144",
    "OAUTH_PUBLISH_REQUEST_TIMEOUT": "5",
    "CONTENTPIPE_ALLOW_PRIVATE_URLS": "1",
}


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args], check=True)


def make_media(folder: Path) -> tuple[Path, Path]:
    """A 4 s H.264 MP4 of about 1 MB (several upload chunks) and a PNG, made by the real encoder."""
    folder.mkdir(parents=True, exist_ok=True)
    video, image = folder / "clip.mp4", folder / "frame.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=640x360:r=15", "-t", "4", "-c:v", "libx264", "-b:v", "2M",
           "-pix_fmt", "yuv420p", "-y", str(video))  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=640x360:r=1", "-frames:v", "1", "-y", str(image))
    return video, image


def platform_env(fakes: Mapping[str, FakePlatform], urls: Mapping[str, str]) -> dict[str, str]:
    env = {}
    for name, url in urls.items():
        env[f"OAUTH_PUBLISH_{'YOUTUBE' if name == 'google' else name.upper()}_URL"] = url
    del fakes
    return env


@dataclass
class Stack:
    stub: Any  # PostingServiceStub over a grpc.aio channel
    app: PostingApplication
    tokens: FakeTokens
    data_dir: Path
    engine: Any

    async def create(self, user: str = "user-1", **post: Any) -> pb.Post:
        request = pb.CreatePostRequest(
            request_id=post.pop("request_id", ""),
            post_id=post.pop("post_id", ""),
            validate_only=post.pop("validate_only", False),
        )
        request.post.CopyFrom(pb.Post(**post))
        response = await self.stub.CreatePost(request, metadata=bearer(user))
        return response.post  # type: ignore[no-any-return]

    async def get(self, name: str, user: str = "user-1") -> pb.Post:
        return (await self.stub.GetPost(pb.GetPostRequest(name=name), metadata=bearer(user))).post  # type: ignore[no-any-return]

    async def wait(
        self,
        name: str,
        states: set[Any],
        *,
        user: str = "user-1",
        timeout: float = 30.0,
        check: Callable[[pb.Post], bool] | None = None,
    ) -> pb.Post:
        deadline = time.monotonic() + timeout
        while True:
            post = await self.get(name, user)
            if post.state in states and (check is None or check(post)):
                return post
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} stuck in {pb.PostState.Name(post.state)}: {post.last_error}")
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def statements_on_posts(engine: Any) -> Iterator[list[str]]:
    """The verbs (INSERT, SELECT, UPDATE) of the statements sent about the posts table while the block runs."""
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if " posts" in statement:
            sent.append(statement.split(maxsplit=1)[0].upper())

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def reset_tables(engine: Any) -> None:
    async with engine.begin() as connection:
        await connection.execute(sa.text("DELETE FROM posts"))
        await connection.execute(sa.text("DELETE FROM posting_rate_limits"))


@contextlib.asynccontextmanager
async def posting_stack(
    database_url: str,
    tmp_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    tokens: FakeTokens | None = None,
    worker: bool = True,
) -> AsyncIterator[Stack]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    # Renditions made for platforms that fetch media by URL (Instagram, TikTok photos) are served from here.
    (data_dir / "renditions").mkdir(exist_ok=True)
    renditions_server = LoopbackHTTPServer(
        Starlette(routes=[Mount("/renditions", StaticFiles(directory=str(data_dir / "renditions")))])
    ).start()
    environ = {
        "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
        "CONTENTPIPE_DATA_DIR": str(data_dir),
        "OAUTH_DATABASE_URL": database_url,
        "OAUTH_GRPC_PORT": str(free_port()),
        "OAUTH_POSTING_WORKER_ID": f"test-worker-{free_port()}",
        "OAUTH_RENDITIONS_PUBLIC_URL": f"{renditions_server.url}/renditions",
        **FAST,
        **(env or {}),
    }
    common = load_common_settings("oauth", environ)
    await run_migrations(common.database_url, MIGRATIONS, VERSION_TABLE)
    engine = create_engine(common.database_url)
    await reset_tables(engine)
    tokens = tokens or FakeTokens()
    app = build_posting(common, load_posting_config(environ, common.data_dir, common.grpc_port), engine, tokens)
    server = build_server(common)
    app.registration.add_to_server(app.registration.servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    task = asyncio.create_task(app.worker.run()) if worker else None
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Stack(posting_service_pb2_grpc.PostingServiceStub(channel), app, tokens, data_dir, engine)
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await channel.close(None)
        await server.stop(0)
        await app.close()
        await engine.dispose()
        renditions_server.stop()
