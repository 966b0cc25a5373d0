"""Fixtures for posting tests: real media files, the six platform fakes on loopback, a static media server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.staticfiles import StaticFiles

from tests.fakes import LoopbackHTTPServer
from tests.fakes.publishing_platforms import ALL_FAKES, FakePlatform
from tests.oauth.posting.harness import make_media


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_media(tmp_path_factory.mktemp("posting-media"))


@pytest.fixture
def local_media(tmp_path: Path, media_files: tuple[Path, Path]) -> tuple[Path, Path]:
    """The media copied into the service's data dir (its file:// storage root), as user-1's generation output."""
    folder = tmp_path / "data" / "generated-content" / "user-1" / "generation-1"
    folder.mkdir(parents=True, exist_ok=True)
    video, image = folder / "clip.mp4", folder / "frame.png"
    shutil.copyfile(media_files[0], video)
    shutil.copyfile(media_files[1], image)
    return video, image


@pytest.fixture
def media_server(media_files: tuple[Path, Path]) -> Iterator[str]:
    """The media over http (for the platforms that fetch it themselves: Instagram)."""
    app = Starlette()
    app.mount("/media", StaticFiles(directory=str(media_files[0].parent)))
    with LoopbackHTTPServer(app) as server:
        yield f"{server.url}/media"


@pytest.fixture
def fakes() -> Iterator[dict[str, FakePlatform]]:
    started: dict[str, FakePlatform] = {}
    servers = []
    try:
        for name, cls in ALL_FAKES.items():
            fake = cls()
            server = LoopbackHTTPServer(fake.app()).start()
            fake.base_url = server.url
            servers.append(server)
            if (second := fake.second_app()) is not None:
                servers.append(extra := LoopbackHTTPServer(second).start())
                fake.second_url = extra.url
            started[name] = fake
        yield started
    finally:
        for server in servers:
            server.stop()


def fake_env(fakes: dict[str, FakePlatform]) -> dict[str, str]:
    names = {"google": "YOUTUBE"}
    env = {f"OAUTH_PUBLISH_{names.get(k, k.upper())}_URL": f.base_url for k, f in fakes.items()}
    if "facebook" in fakes:
        env["OAUTH_PUBLISH_FACEBOOK_VIDEO_URL"] = fakes["facebook"].second_url
    return env
