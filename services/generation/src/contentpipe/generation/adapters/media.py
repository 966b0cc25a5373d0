"""Media tools on the ffmpeg binary that the imageio-ffmpeg wheel ships: encode, probe, sniff content types.

ffmpeg runs as a child process, so encoding and probing never block the event loop; a semaphore bounds how
many run at once (the machine has few cores).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_STREAM = re.compile(r"Stream #\d+:\d+.*?: Video: .*?, (\d{2,5})x(\d{2,5})[, \[]")
_FPS = re.compile(r"(\d+(?:\.\d+)?) fps")
_FRAMES = re.compile(r"frame=\s*(\d+)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


class MediaError(Exception):
    """ffmpeg could not produce or read the media."""


@cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # type: ignore[import-untyped]  # lazy: keeps start-up fast

    return str(imageio_ffmpeg.get_ffmpeg_exe())


_slots: asyncio.Semaphore | None = None


def _ffmpeg_slots() -> asyncio.Semaphore:
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(2)
    return _slots


async def run_ffmpeg(*args: str, limit_seconds: float = 120.0) -> str:
    """Run ffmpeg; returns stderr (where it reports); raises MediaError on failure."""
    async with _ffmpeg_slots():
        process = await asyncio.create_subprocess_exec(
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=limit_seconds)
        except (TimeoutError, asyncio.CancelledError):
            process.kill()
            await process.wait()
            raise
    text = stderr.decode("utf-8", errors="replace")
    if process.returncode != 0:
        raise MediaError(text.strip().splitlines()[-1] if text.strip() else f"ffmpeg exited {process.returncode}")
    return text


@dataclass(frozen=True, slots=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frame_count: int
    duration_seconds: float


async def probe_video(path: Path) -> VideoInfo:
    """Frame size, fps and frame count of the first video stream (packets counted without decoding)."""
    text = await run_ffmpeg("-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-")
    stream = _STREAM.search(text)
    if stream is None:
        raise MediaError("no video stream")
    stream_line = text[stream.start() : text.find("\n", stream.start())]
    fps_match = _FPS.search(stream_line)
    frames = _FRAMES.findall(text)
    fps = float(fps_match.group(1)) if fps_match else 0.0
    frame_count = int(frames[-1]) if frames else 0
    duration_match = _DURATION.search(text)
    duration = (
        int(duration_match.group(1)) * 3600 + int(duration_match.group(2)) * 60 + float(duration_match.group(3))
        if duration_match
        else 0.0
    )
    if fps and frame_count:
        duration = round(frame_count / fps, 3)
    return VideoInfo(int(stream.group(1)), int(stream.group(2)), fps, frame_count, duration)


async def probe_image_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG (from its header) or any image ffmpeg reads."""
    with path.open("rb") as handle:
        head = handle.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    text = await run_ffmpeg("-i", str(path), "-f", "null", "-")
    stream = _STREAM.search(text)
    if stream is None:
        raise MediaError("not an image ffmpeg can read")
    return int(stream.group(1)), int(stream.group(2))


def sniff_content_type(head: bytes) -> str | None:
    """The real type of a file from its first bytes (never trust a server's Content-Type alone)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"GIF8"):
        return "image/gif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "video/quicktime" if brand == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def _colour(digest: bytes, offset: int) -> str:
    return "0x" + digest[offset : offset + 3].hex()


def seed_for(prompt: str, seed: int | None) -> tuple[int, bytes]:
    """The local provider's deterministic seed and palette bytes from prompt and seed."""
    digest = hashlib.sha256(f"{seed if seed is not None else ''}\x00{prompt}".encode()).digest()
    derived = seed if seed is not None else int.from_bytes(digest[:4], "big")
    return derived & 0x7FFFFFFF, digest


# Bitrate floor of the local provider's videos: a near-uniform gradient would otherwise compress to a few KB, and
# LinkedIn refuses videos under 75 KB (600 kbit/s x 3 s is ~225 KB).
VIDEO_BITRATE = "600k"


async def encode_video(
    path: Path,
    *,
    prompt: str,
    seed: int | None,
    width: int,
    height: int,
    fps: int,
    frames: int,
    limit_seconds: float = 120.0,
) -> None:
    """A real MP4 every platform takes as is: H.264 High yuv420p at a constant 600 kbit/s, a silent AAC track,
    faststart, exactly `frames` frames at `fps`; deterministic in prompt+seed.

    The gradient is drawn at a quarter of the size and scaled up (drawing dominates the cost at 720p and above),
    and x264's `superfast` preset keeps CABAC (High profile, which X asks for) at a fraction of `veryfast`'s time."""
    derived, digest = seed_for(prompt, seed)
    small_w, small_h = max(16, width // 4), max(16, height // 4)
    source = (
        f"gradients=s={small_w}x{small_h}:r={fps}:seed={derived}:speed=0.02:"
        f"c0={_colour(digest, 4)}:c1={_colour(digest, 7)}:c2={_colour(digest, 10)}:n=3,"
        f"scale={width}:{height}:flags=bicubic,format=yuv420p"
    )
    await run_ffmpeg(
        "-loglevel", "error", "-f", "lavfi", "-i", source, "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo",
        "-frames:v", str(frames), "-shortest",
        "-c:v", "libx264", "-preset", "superfast", "-profile:v", "high", "-pix_fmt", "yuv420p", "-r", str(fps),
        "-b:v", VIDEO_BITRATE, "-minrate", VIDEO_BITRATE, "-maxrate", VIDEO_BITRATE, "-bufsize", "1200k",
        "-x264-params", "nal-hrd=cbr",
        "-c:a", "aac", "-b:a", "64k",
        "-movflags", "+faststart", "-map_metadata", "-1",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-y", str(path), limit_seconds=limit_seconds,
    )  # fmt: skip


async def encode_image(
    path: Path, *, prompt: str, seed: int | None, width: int, height: int, limit_seconds: float = 120.0
) -> None:
    """A real baseline JPEG at quality ~90 (Instagram takes JPEG only), deterministic in prompt+seed."""
    derived, digest = seed_for(prompt, seed)
    source = (
        f"gradients=s={width}x{height}:r=1:seed={derived}:"
        f"c0={_colour(digest, 4)}:c1={_colour(digest, 7)}:c2={_colour(digest, 10)}:n=3,format=yuvj420p"
    )
    await run_ffmpeg(
        "-loglevel", "error", "-f", "lavfi", "-i", source, "-frames:v", "1", "-c:v", "mjpeg", "-q:v", "3",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-y", str(path),
        limit_seconds=limit_seconds,
    )  # fmt: skip
