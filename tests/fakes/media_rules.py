"""What each platform's media processing refuses (their published media guides), for the publishing fakes.

The fakes call `media_problem(platform, kind, data)` on the bytes they receive (upload) or download (Instagram,
TikTok pulls) and refuse with their platform's own error shape when it returns a problem. The probe and the rules here
are written independently of contentpipe's conformer (its own ffmpeg parsing, the platforms' limits as they state
them), so a mistake in the service's spec table shows up as a refusal instead of being shared by the test.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
from dataclasses import dataclass

import imageio_ffmpeg  # type: ignore[import-untyped]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Seen:
    """What the platform sees in a file."""

    format: str  # jpeg png webp gif mp4 mov webm, "" if none of those
    width: int = 0
    height: int = 0
    video_codec: str = ""
    profile: str = ""
    pixel_format: str = ""
    fps: float = 0.0
    duration: float = 0.0
    audio_codec: str = ""
    moov_first: bool = False
    size: int = 0


def _format(head: bytes) -> str:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"GIF8"):
        return "gif"
    if head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    return ""


def _moov_first(data: bytes) -> bool:
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        if kind in (b"moov", b"mdat"):
            return kind == b"moov"
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            return False
        offset += size
    return False


def see(data: bytes) -> Seen:
    """Probe bytes with ffmpeg (blocking: call through `media_problem`)."""
    fmt = _format(data[:16])
    if not fmt:
        return Seen("", size=len(data))
    with tempfile.NamedTemporaryFile(suffix="." + fmt) as handle:
        handle.write(data)
        handle.flush()
        text = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", handle.name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stderr
    video = re.search(r"Stream #\S+.*?: Video: (\w+)(?: \(([\w ]+)\))?[^,]*, (\w+)[^,]*.*?(\d+)x(\d+)", text)
    fps = re.search(r"Video:.*?(\d+(?:\.\d+)?) fps", text)
    audio = re.search(r"Stream #\S+.*?: Audio: (\w+)", text)
    duration = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", text)
    return Seen(
        format=fmt,
        width=int(video.group(4)) if video else 0,
        height=int(video.group(5)) if video else 0,
        video_codec=video.group(1) if video else "",
        profile=(video.group(2) or "") if video else "",
        pixel_format=video.group(3) if video else "",
        fps=float(fps.group(1)) if fps else 0.0,
        duration=(int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3)))
        if duration
        else 0.0,
        audio_codec=audio.group(1) if audio else "",
        moov_first=fmt == "mp4" and _moov_first(data),
        size=len(data),
    )


VIDEO_FORMATS = {"mp4", "mov", "webm"}


def _image_rules(platform: str, s: Seen) -> str | None:
    if platform == "instagram":
        if s.format != "jpeg":
            return f"Instagram accepts JPEG images only, got {s.format or 'unknown'}"
        if not 0.8 <= s.width / s.height <= 1.91:
            return f"aspect ratio {s.width}x{s.height} is outside 4:5 to 1.91:1"
        if not 320 <= s.width <= 1440:
            return f"image width {s.width} is outside 320-1440"
        if s.size > 8 * MIB:
            return "image is larger than 8 MB"
    elif platform == "tiktok":
        if s.format not in ("jpeg", "webp"):
            return f"TikTok photos must be JPEG or WebP, got {s.format or 'unknown'}"
        if max(s.width, s.height) > 1920 or min(s.width, s.height) > 1080:
            return f"photo {s.width}x{s.height} is larger than 1080p"
        if s.size > 20 * MIB:
            return "photo is larger than 20 MB"
    elif platform == "twitter":
        if s.format not in ("jpeg", "png", "webp", "gif"):
            return f"unsupported image format {s.format or 'unknown'}"
        if s.size > (15 if s.format == "gif" else 5) * MIB:
            return "image is larger than 5 MB"
    elif platform == "linkedin":
        if s.format not in ("jpeg", "png", "gif"):
            return f"unsupported image format {s.format or 'unknown'}"
        if s.width * s.height > 36_000_000:
            return "image is larger than 36 megapixels"
    elif platform == "facebook":
        if s.format not in ("jpeg", "png"):
            return f"photos must be JPG or PNG, got {s.format or 'unknown'}"
        if s.size > 4 * MIB:
            return "photos must be under 4 MB"
    return None


def _video_rules(platform: str, s: Seen) -> str | None:
    if platform == "instagram":
        if s.format not in ("mp4", "mov") or s.video_codec not in ("h264", "hevc"):
            return f"unsupported video: {s.format} {s.video_codec}"
        if s.audio_codec != "aac":
            return "video needs an AAC audio track"
        if not s.moov_first and s.format == "mp4":
            return "moov atom must come first"
        if not 23 <= s.fps <= 60:
            return f"frame rate {s.fps:g} fps is outside 23-60"
        if not 3 <= s.duration <= 900:
            return f"duration {s.duration:g} s is outside 3 s-15 min"
        if s.width > 1920:
            return "video is wider than 1920"
    elif platform == "tiktok":
        if s.format not in VIDEO_FORMATS or s.video_codec not in ("h264", "hevc", "vp8", "vp9"):
            return "file_format_check_failed"
        if not 23 <= s.fps <= 60:
            return "frame_rate_check_failed"
        if not 3 <= s.duration <= 600:
            return "duration_check_failed"
        if not (360 <= s.width <= 4096 and 360 <= s.height <= 4096):
            return "picture_size_check_failed"
    elif platform == "twitter":
        if s.format != "mp4" or s.video_codec != "h264" or s.profile not in ("High", "Main"):
            return f"video must be MP4 H.264 High or Main, got {s.format} {s.video_codec} {s.profile}"
        if s.pixel_format != "yuv420p":
            return f"pixel format {s.pixel_format} is not yuv420p"
        if s.audio_codec != "aac":
            return "video needs AAC LC audio"
        if s.fps > 60 or not 0.5 <= s.duration <= 140:
            return f"{s.fps:g} fps / {s.duration:g} s is outside 60 fps / 0.5-140 s"
        if not (min(s.width, s.height) >= 32 and max(s.width, s.height) <= 1920 and min(s.width, s.height) <= 1200):
            return f"dimensions {s.width}x{s.height} are outside 32x32-1920x1200"
    elif platform == "linkedin":
        if s.format != "mp4":
            return f"video must be MP4, got {s.format}"
        if not 10 <= s.fps <= 60:
            return f"frame rate {s.fps:g} fps is outside 10-60"
        if not 3 <= s.duration <= 1800:
            return f"duration {s.duration:g} s is outside 3 s-30 min"
        if not 75 * 1000 <= s.size <= 500 * MIB:
            return f"file size {s.size} bytes is outside 75 KB-500 MB"
    elif platform == "facebook":
        if s.format not in ("mp4", "mov") or s.video_codec != "h264" or s.audio_codec != "aac":
            return f"video must be H.264/AAC, got {s.video_codec}/{s.audio_codec or 'no audio'}"
        if s.fps > 60 or s.duration < 1:
            return f"{s.fps:g} fps / {s.duration:g} s: at most 60 fps and at least 1 s"
    elif platform == "google" and (s.format not in VIDEO_FORMATS or s.duration < 1):
        return "the video is too short or not a video"
    return None


def check(platform: str, kind: str, data: bytes) -> str | None:
    """The platform's refusal of these bytes as `kind` ("image" or "video"), or None when it takes them."""
    seen = see(data)
    if not seen.format or not seen.width:
        return "the file is not an image or video the platform can read"
    is_video = seen.format in VIDEO_FORMATS
    if kind == "video" and not is_video:
        return f"expected a video, got {seen.format}"
    if kind == "image" and is_video:
        return f"expected an image, got {seen.format}"
    return _video_rules(platform, seen) if is_video else _image_rules(platform, seen)


async def media_problem(platform: str, kind: str, data: bytes) -> str | None:
    """`check` off the fake's event loop."""
    return await asyncio.to_thread(check, platform, kind, data)


__all__ = ["Seen", "check", "media_problem", "see"]
