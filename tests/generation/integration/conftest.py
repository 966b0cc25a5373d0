"""Fixtures for generation integration tests: media bytes made by the real encoder, a Replicate fake."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest

from tests.fakes import LoopbackHTTPServer
from tests.fakes.replicate import FakeReplicate


def _ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024x576 14-frame MP4 at 6 fps (what SVD returns), a 1024x576 PNG (a first frame), a 1024x1024 JPEG."""
    root = tmp_path_factory.mktemp("media")
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1024x576:r=6", "-frames:v", "14", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-y", str(root / "svd.mp4"))  # fmt: skip
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1024x576:r=1", "-frames:v", "1", "-y", str(root / "frame.png"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=1024x1024:r=1", "-frames:v", "1", "-q:v", "3", "-y", str(root / "out.jpg"))
    return root


@pytest.fixture
def replicate_fake(media_dir: Path) -> Iterator[tuple[FakeReplicate, str]]:
    fake = FakeReplicate(
        video_bytes=(media_dir / "svd.mp4").read_bytes(),
        image_bytes=(media_dir / "frame.png").read_bytes(),
        jpeg_bytes=(media_dir / "out.jpg").read_bytes(),
    )
    with LoopbackHTTPServer(fake.app) as server:
        fake.base_url = server.url
        yield fake, server.url


def replicate_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "GENERATION_DEFAULT_PROVIDER": "replicate",
        "REPLICATE_BASE_URL": url,
        "REPLICATE_API_TOKEN": "r8_test_token",
        "REPLICATE_PREFER_WAIT_SECONDS": "1",
        "REPLICATE_POLL_INITIAL": "100ms",
        "REPLICATE_POLL_MAX": "300ms",
        "REPLICATE_CREATE_LOOKUP_DELAY": "200ms",
        "GENERATION_WORKER_POLL_INTERVAL": "200ms",
        **extra,
    }
