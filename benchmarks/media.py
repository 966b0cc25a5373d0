"""Row 7, media conformance: what converting a generated file for its platform costs, against decoding it once.

The conformer under test is the oauth service's own (`Renditions`: probe, plan, ffmpeg render, probe again, store),
on the files generation's models return: a 4 s 1024x576 6 fps H.264 MP4 (Stable Video Diffusion's shape) made
conformant for TikTok (re-timed to 30 fps, silent AAC, faststart), and a 2 MB PNG turned into an Instagram JPEG.
Baseline, same run and same files: a plain ffmpeg decode of the file (`-f null`), the least any conversion must do.
Peak RSS is the largest ffmpeg child of the row (getrusage of waited children).
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from contentpipe.oauth.adapters.media_tools import MediaTools, ToolLimits, ffmpeg_exe
from contentpipe.oauth.adapters.publishers.media import MediaFetcher, MediaPolicy
from contentpipe.oauth.adapters.renditions import Renditions, RenditionSettings, StorageArea
from contentpipe.oauth.domain.posts import Media, MediaKind, Platform, Post, PostOptions

from benchmarks.harness import Row, Sizes


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", *args], check=True)


def _originals(folder: Path, smoke: bool) -> tuple[Path, Path]:
    video, image = folder / "svd.mp4", folder / "model.png"
    size, frames, side = ("256x144", 6, 160) if smoke else ("1024x576", 24, 640)
    _ffmpeg("-f", "lavfi", "-i", f"gradients=s={size}:r=6:seed=5,format=yuv420p", "-frames:v", str(frames),
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", "6", "-y", str(video))  # fmt: skip
    # Noise keeps the PNG about 2 MB at 640x640, as large as text-to-image PNGs are.
    _ffmpeg("-f", "lavfi", "-i", f"gradients=s={side}x{side}:seed=5,noise=alls=40:allf=u", "-frames:v", "1",
            "-y", str(image))  # fmt: skip
    return video, image


def _post(platform: Platform, media: Media) -> Post:
    return Post(
        id="bench", owner="bench", connection_id="c", platform=platform, text="", media=(media,),
        options=PostOptions(), create_time=datetime.now(UTC),
    )  # fmt: skip


def media(sizes: Sizes) -> list[Row]:
    shape = "1 s 256x144" if sizes.smoke else "4 s 1024x576"
    video_row = Row(
        "7.video", f"conform {shape} 6 fps MP4 for TikTok", "probe + re-time to 30 fps + AAC + faststart + re-probe",
        "ms", baseline="ffmpeg decode of the same file",
    )  # fmt: skip
    image_row = Row(
        "7.image", "conform ~2 MB PNG for Instagram" if not sizes.smoke else "conform small PNG for Instagram",
        "probe + JPEG re-encode + re-probe", "ms", baseline="ffmpeg decode of the same file",
    )  # fmt: skip
    rss_row = Row("7.rss", "conversion peak RSS", "largest ffmpeg child", "MB", op="<=", target_value=400.0,
                  target_on="value")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        video, image = _originals(work, sizes.smoke)
        image_row.measures += f" ({image.stat().st_size / 1e6:.1f} MB PNG)"

        async def measure() -> None:
            async with httpx.AsyncClient() as client:
                policy = MediaPolicy(allow_private=True, file_roots=[work])
                fetcher = MediaFetcher(client, policy, work / "tmp", 1 << 30)
                tools = MediaTools(ToolLimits(concurrency=1))
                settings = RenditionSettings(own=StorageArea(work / "renditions", "http://127.0.0.1:9/renditions"))
                renditions = Renditions(tools, fetcher, settings)
                for run in range(sizes.repeat + 1):  # the first run warms the page cache and is not counted
                    for original, platform, kind, row in (
                        (video, Platform.TIKTOK, MediaKind.VIDEO, video_row),
                        (image, Platform.INSTAGRAM, MediaKind.IMAGE, image_row),
                    ):
                        copy = work / f"run{run}-{original.name}"  # a fresh original: nothing to reuse
                        shutil.copyfile(original, copy)
                        post = _post(platform, Media(copy.as_uri(), kind))
                        begin = time.perf_counter()
                        (result,) = await renditions.conform(post)
                        spent = (time.perf_counter() - begin) * 1000
                        assert result.uri != post.media[0].uri, "the original should have needed a conversion"
                        begin = time.perf_counter()
                        await asyncio.to_thread(_ffmpeg, "-i", str(copy), "-f", "null", "-")
                        decoded = (time.perf_counter() - begin) * 1000
                        if run:
                            row.samples.append(spent)
                            row.baseline_samples.append(decoded)

        asyncio.run(measure())
    rss_row.samples.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    return [video_row, image_row, rss_row]
