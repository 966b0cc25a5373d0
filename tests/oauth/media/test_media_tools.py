"""The ffmpeg probe and renderer on real files: renditions that the same rules then accept, bounded runs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest
from contentpipe.oauth.adapters.media_tools import MediaToolError, MediaTools, ToolLimits, moov_before_mdat
from contentpipe.oauth.domain.media_conformance import Verdict, assess, violations
from contentpipe.oauth.domain.media_specs import spec_for
from contentpipe.oauth.domain.posts import MediaKind, Platform

pytestmark = pytest.mark.integration


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *args], check=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media-tools")
    local = folder / "local.mp4"  # the local provider's former default: 512x288, 8 fps, 2 s, no audio
    ffmpeg("-f", "lavfi", "-i", "gradients=s=512x288:r=8:n=3,format=yuv420p", "-frames:v", "16",
           "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
           "-y", str(local))  # fmt: skip
    late_index = folder / "late.mp4"  # moov at the end, AAC audio, 30 fps
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=30", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono",
           "-t", "1", "-c:v", "libx264", "-c:a", "aac", "-shortest", "-y", str(late_index))  # fmt: skip
    png = folder / "frame.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=600x900:r=1", "-frames:v", "1", "-y", str(png))
    return {"local": local, "late": late_index, "png": png}


@pytest.fixture
def tools() -> MediaTools:
    return MediaTools(ToolLimits(timeout_seconds=60))


async def test_probe_reads_the_local_default_video(tools: MediaTools, files: dict[str, Path]) -> None:
    probe = await tools.probe(files["local"])
    assert (probe.container, probe.video_codec, probe.pixel_format) == ("video/mp4", "h264", "yuv420p")
    assert (probe.width, probe.height, probe.fps, probe.duration) == (512, 288, 8.0, 2.0)
    assert not probe.has_audio and probe.faststart


async def test_probe_reads_audio_and_a_late_index(tools: MediaTools, files: dict[str, Path]) -> None:
    probe = await tools.probe(files["late"])
    assert (probe.audio_codec, probe.audio_profile) == ("aac", "LC")
    assert not probe.faststart and not moov_before_mdat(files["late"])


async def test_probe_of_something_else_has_no_container(tools: MediaTools, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not media at all" * 10)
    probe = await tools.probe(junk)
    assert probe.container == "" and probe.kind is None


@pytest.mark.parametrize("platform", [Platform.TIKTOK, Platform.INSTAGRAM, Platform.LINKEDIN, Platform.TWITTER,
                                      Platform.FACEBOOK])  # fmt: skip
async def test_local_default_video_renders_into_a_conforming_rendition(
    tools: MediaTools, files: dict[str, Path], tmp_path: Path, platform: Platform
) -> None:
    spec = spec_for(platform, MediaKind.VIDEO)
    assert spec is not None
    result = assess(await tools.probe(files["local"]), spec)
    assert result.verdict is Verdict.CONVERT and result.plan is not None
    target = tmp_path / "out.mp4"
    await tools.render(files["local"], result.plan, target)
    rendition = await tools.probe(target)
    assert violations(rendition, spec) == []
    assert rendition.has_audio and rendition.faststart and rendition.video_profile == "High"


async def test_png_renders_into_an_instagram_jpeg_padded_to_four_by_five(
    tools: MediaTools, files: dict[str, Path], tmp_path: Path
) -> None:
    spec = spec_for(Platform.INSTAGRAM, MediaKind.IMAGE)
    assert spec is not None
    result = assess(await tools.probe(files["png"]), spec)  # 600x900 is 2:3, taller than 4:5
    assert result.plan is not None and result.plan.padded
    target = tmp_path / "out.jpg"
    await tools.render(files["png"], result.plan, target)
    rendition = await tools.probe(target)
    assert rendition.container == "image/jpeg" and (rendition.width, rendition.height) == (720, 900)
    assert violations(rendition, spec) == []


async def test_a_run_over_its_time_limit_is_killed(tmp_path: Path) -> None:
    tools = MediaTools(ToolLimits(timeout_seconds=0.5))
    endless = ["-f", "lavfi", "-i", "testsrc2=s=320x240:r=30", "-f", "null", "-"]
    with pytest.raises(MediaToolError) as caught:
        await tools._run(endless, check=True)
    assert caught.value.reason == "CONVERSION_TIMEOUT"


async def test_a_run_over_its_memory_limit_fails_cleanly(files: dict[str, Path], tmp_path: Path) -> None:
    tools = MediaTools(ToolLimits(memory_bytes=16 * 1024 * 1024))
    spec = spec_for(Platform.TIKTOK, MediaKind.VIDEO)
    assert spec is not None
    plan = assess(await MediaTools(ToolLimits()).probe(files["local"]), spec).plan
    assert plan is not None
    with pytest.raises(MediaToolError) as caught:
        await tools.render(files["local"], plan, tmp_path / "out.mp4")
    assert caught.value.reason == "CONVERSION_FAILED"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_ffmpeg_dies_with_the_service_even_on_kill_9(tmp_path: Path) -> None:
    script = (
        "import asyncio\n"
        "from contentpipe.oauth.adapters.media_tools import MediaTools, ToolLimits\n"
        "print('ready', flush=True)\n"
        "asyncio.run(MediaTools(ToolLimits(timeout_seconds=600))._run("
        "['-f', 'lavfi', '-i', 'testsrc2=s=320x240:r=30', '-f', 'null', '-'], check=True))\n"
    )
    service = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        assert service.stdout is not None and service.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while not (children := _children(service.pid)):
            assert time.monotonic() < deadline, "ffmpeg never started"
            time.sleep(0.05)
        service.send_signal(signal.SIGKILL)
        service.wait()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() and "ffmpeg" in _cmdline(pid) for pid in children):
            assert time.monotonic() < deadline, "ffmpeg outlived the killed service"
            time.sleep(0.05)
    finally:
        service.kill()
        service.wait()
        for pid in children:  # never leak an ffmpeg, even when the test fails
            if "ffmpeg" in _cmdline(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_abandoned_temporary_renditions_are_removed_recent_ones_kept(tmp_path: Path) -> None:
    from contentpipe.oauth.adapters.renditions import _remove_abandoned

    rendition = tmp_path / "clip.mp4.renditions" / "tiktok.mp4"
    rendition.parent.mkdir()
    old = rendition.with_name(".tiktok.mp4.dead.part")
    fresh = rendition.with_name(".tiktok.mp4.live.part")
    other = rendition.with_name(".instagram.mp4.dead.part")
    for leftover in (old, fresh, other):
        leftover.write_bytes(b"half a file")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    _remove_abandoned(rendition, older_than=600)
    assert not old.exists() and fresh.exists() and other.exists()  # only this rendition's, only stale ones


async def test_conformance_results_and_conversion_time_are_metered(files: dict[str, Path], tmp_path: Path) -> None:
    from datetime import UTC, datetime

    import httpx
    from contentpipe.oauth.adapters.publishers.media import MediaFetcher, MediaPolicy
    from contentpipe.oauth.adapters.renditions import Renditions, RenditionSettings, StorageArea
    from contentpipe.oauth.domain.posts import Media, Post, PostOptions
    from contentpipe.oauth.service_layer.metrics import OAuthMetrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    original = tmp_path / "local.mp4"
    original.write_bytes(files["local"].read_bytes())
    reader = InMemoryMetricReader()
    async with httpx.AsyncClient() as client:
        policy = MediaPolicy(allow_private=True, file_roots=[tmp_path])
        fetcher = MediaFetcher(client, policy, tmp_path / "tmp", 1 << 30)
        renditions = Renditions(MediaTools(ToolLimits()), fetcher, RenditionSettings(StorageArea(tmp_path / "r")))
        renditions.metrics = OAuthMetrics(MeterProvider(metric_readers=[reader]).get_meter("test"))
        for platform in (Platform.TIKTOK, Platform.TIKTOK, Platform.GOOGLE):
            post = Post("p", "user-1", "c", platform, "", (Media(original.as_uri(), MediaKind.VIDEO),), PostOptions(),
                        datetime.now(UTC))  # fmt: skip
            await renditions.conform(post)
    data = reader.get_metrics_data()
    assert data is not None
    metrics = {m.name: m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
    counted = {
        (str((p.attributes or {})["platform"]), str((p.attributes or {})["result"])): p.value  # type: ignore[union-attr]
        for p in metrics["contentpipe.oauth.media.conformance"].data.data_points
    }
    assert counted == {("tiktok", "converted"): 1, ("tiktok", "reused"): 1, ("google", "conforms"): 1}
    (timing,) = metrics["contentpipe.oauth.media.conversion.duration"].data.data_points
    assert timing.count == 1  # type: ignore[union-attr]
