"""ffmpeg (the binary the imageio-ffmpeg wheel ships) as the media probe and the renderer of rendition plans.

There is no ffprobe in that wheel: the probe reads what `ffmpeg -i` prints about the streams (codec, profile, pixel
format, size, frame rate, duration) and the file's own bytes (container by its magic, MP4 box order for faststart).
Every run is a child process (never blocking the event loop), bounded in wall time (killed at the limit), in
address space (RLIMIT_AS) and in threads; at most `concurrency` run at once per `MediaTools`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import shutil
import signal
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from contentpipe.oauth.domain.media_conformance import MediaProbe, RenditionPlan
from contentpipe.oauth.domain.posts import MediaKind

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio): (.*)$", re.MULTILINE)
_SIZE = re.compile(r"(?<![\w.])(\d{1,5})x(\d{1,5})(?![\w.])")
_FPS = re.compile(r"(\d+(?:\.\d+)?)(k?) fps")
_TBR = re.compile(r"(\d+(?:\.\d+)?)(k?) tbr")
# Each top-level MP4 box: 4-byte size, 4-byte type (size 1: a 64-bit size follows; 0: to the end of the file).
_BOX_HEADER = struct.Struct(">I4s")


class MediaToolError(Exception):
    """ffmpeg could not read or write the media; `reason` is UPPER_SNAKE for the post's error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ToolLimits:
    timeout_seconds: float = 300.0
    memory_bytes: int = 2 * 1024 * 1024 * 1024  # address space of one ffmpeg run
    threads: int = 2
    concurrency: int = 2


@cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg  # type: ignore[import-untyped]  # lazy: keeps start-up fast

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def sniff_container(head: bytes) -> str:
    """The real type of a file from its first bytes (a server's Content-Type or a file name may lie)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return ""


def moov_before_mdat(path: Path) -> bool:
    """True when the MP4 index (moov) comes before the media data (mdat): "faststart"."""
    with path.open("rb") as handle:
        offset = 0
        size_total = os.fstat(handle.fileno()).st_size
        while offset + 8 <= size_total:
            handle.seek(offset)
            size, kind = _BOX_HEADER.unpack(handle.read(8))
            if kind == b"moov":
                return True
            if kind == b"mdat":
                return False
            if size == 1:
                size = struct.unpack(">Q", handle.read(8))[0]
            elif size == 0:
                return False
            if size < 8:
                return False
            offset += size
    return False


def _rate(match: re.Match[str] | None) -> float:
    if match is None:
        return 0.0
    return float(match.group(1)) * (1000 if match.group(2) else 1)


def parse_probe(text: str, container: str, size_bytes: int, faststart: bool) -> MediaProbe:
    """A MediaProbe from what `ffmpeg -i` printed (the first video stream and the first audio stream)."""
    video: dict[str, str | float | int] = {}
    audio: dict[str, str] = {}
    for match in _STREAM.finditer(text):
        kind, rest = match.group(1), match.group(2)
        if kind == "Video" and not video and "(attached pic)" not in rest:
            head, _, tail = rest.partition(",")
            codec, _, extra = head.strip().partition(" ")
            profile = re.match(r"\(([^)/]+)\)", extra.strip())
            pixel = tail.strip().split(",")[0].split("(")[0].strip() if tail else ""
            size = _SIZE.search(rest)
            video = {
                "codec": codec,
                "profile": profile.group(1).strip() if profile else "",
                "pixel": pixel,
                "width": int(size.group(1)) if size else 0,
                "height": int(size.group(2)) if size else 0,
                "fps": _rate(_FPS.search(rest)) or _rate(_TBR.search(rest)),
            }
        elif kind == "Audio" and not audio:
            head = rest.split(",")[0].strip()
            codec, _, extra = head.partition(" ")
            profile = re.match(r"\(([^)/]+)\)", extra.strip())
            audio = {"codec": codec, "profile": profile.group(1).strip() if profile else ""}
    duration_match = _DURATION.search(text)
    duration = (
        int(duration_match.group(1)) * 3600 + int(duration_match.group(2)) * 60 + float(duration_match.group(3))
        if duration_match
        else 0.0
    )
    is_video = container.startswith("video/")
    return MediaProbe(
        container=container,
        size_bytes=size_bytes,
        width=int(video.get("width", 0)),
        height=int(video.get("height", 0)),
        video_codec=str(video.get("codec", "")) if is_video else "",
        video_profile=str(video.get("profile", "")) if is_video else "",
        pixel_format=str(video.get("pixel", "")) if is_video else "",
        fps=float(video.get("fps", 0.0)) if is_video else 0.0,
        duration=round(duration, 3) if is_video else 0.0,
        audio_codec=audio.get("codec", "") if is_video else "",
        audio_profile=audio.get("profile", "") if is_video else "",
        faststart=faststart,
    )


_log = logging.getLogger(__name__)


@cache
def _confinement() -> tuple[str, ...]:
    """The command prefix that confines an ffmpeg run before it starts: util-linux's `setpriv --pdeathsig KILL` (the
    kernel kills it when the service dies, kill -9 included) and `prlimit --as` (its address space), both in every
    Debian-based image. Empty where they are missing (then only the wall-time limit and the process group hold).

    Not a `preexec_fn`: Python code between fork and exec makes CPython use fork() instead of vfork(), and fork()
    runs gRPC's at-fork handlers, which restart its thread pools in the child; with the service's gRPC threads
    busy the child could hang there before ever reaching ffmpeg (seen in the test suite: a child stuck in
    gRPC's post-fork handler for minutes)."""
    setpriv, prlimit = shutil.which("setpriv"), shutil.which("prlimit")
    if setpriv is None or prlimit is None:
        _log.warning("setpriv or prlimit (util-linux) missing: ffmpeg runs without its memory and parent-death limits")
        return ()
    return (setpriv, "--pdeathsig", "KILL", "--", prlimit)


def _confined(memory_bytes: int, command: list[str]) -> list[str]:
    prefix = _confinement()
    return [*prefix, f"--as={memory_bytes}", "--", *command] if prefix else command


class MediaTools:
    """Probe and render with bounded ffmpeg runs."""

    def __init__(self, limits: ToolLimits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.concurrency)

    async def _run(self, args: list[str], *, check: bool, limit_seconds: float | None = None) -> str:
        limit = limit_seconds or self.limits.timeout_seconds
        async with self._slots:
            process = await asyncio.create_subprocess_exec(
                *_confined(self.limits.memory_bytes, [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout kills ffmpeg and anything it started
            )
            try:
                _, stderr = await asyncio.wait_for(process.communicate(), timeout=limit)
            except TimeoutError:
                await _kill(process)
                raise MediaToolError(
                    "CONVERSION_TIMEOUT", f"ffmpeg did not finish within {limit:g} s (OAUTH_MEDIA_CONVERT_TIMEOUT)"
                ) from None
            except BaseException:
                await _kill(process)
                raise
        text = stderr.decode("utf-8", errors="replace")
        if check and process.returncode != 0:
            last = text.strip().splitlines()[-1] if text.strip() else f"exit status {process.returncode}"
            raise MediaToolError("CONVERSION_FAILED", f"ffmpeg failed: {last[:300]}")
        return text

    async def probe(self, path: Path) -> MediaProbe:
        """Container, codecs, size, frame rate, duration, audio, faststart and bytes of one file."""

        def read_head() -> tuple[bytes, int]:
            with path.open("rb") as handle:
                return handle.read(64), os.fstat(handle.fileno()).st_size

        head, size = await asyncio.to_thread(read_head)
        container = sniff_container(head)
        if not container:
            return MediaProbe(container="", size_bytes=size)
        faststart = container == "video/mp4" and await asyncio.to_thread(moov_before_mdat, path)
        text = await self._run(["-i", str(path)], check=False, limit_seconds=min(60.0, self.limits.timeout_seconds))
        return parse_probe(text, container, size, faststart)

    async def render(self, source: Path, plan: RenditionPlan, target: Path, *, quality: int = 3) -> None:
        """Write the rendition `plan` describes to `target` (JPEG quality 2-31, lower is better)."""
        if plan.kind is MediaKind.IMAGE:
            await self._run(image_args(source, plan, target, quality=quality, threads=self.limits.threads), check=True)
            return
        await self._run(video_args(source, plan, target, threads=self.limits.threads), check=True)
        if plan.min_bytes:
            await asyncio.to_thread(pad_to_size, target, plan.min_bytes)


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()


def _geometry_filters(plan: RenditionPlan, flags: str) -> list[str]:
    filters = [f"scale={plan.width}:{plan.height}:flags={flags}"]
    if plan.padded:
        filters.append(f"pad={plan.canvas_width}:{plan.canvas_height}:(ow-iw)/2:(oh-ih)/2:color=black")
    filters.append("setsar=1")
    return filters


def image_args(source: Path, plan: RenditionPlan, target: Path, *, quality: int, threads: int) -> list[str]:
    chain = ",".join([*_geometry_filters(plan, "lanczos"), "format=yuvj420p"])
    return [
        "-loglevel", "error", "-threads", str(threads), "-i", str(source), "-frames:v", "1", "-vf", chain,
        "-c:v", "mjpeg", "-q:v", str(quality), "-map_metadata", "-1", "-f", "image2", "-update", "1",
        "-y", str(target),
    ]  # fmt: skip


def video_args(source: Path, plan: RenditionPlan, target: Path, *, threads: int) -> list[str]:
    args = ["-loglevel", "error", "-threads", str(threads), "-i", str(source)]
    if plan.silent_audio:
        args += ["-f", "lavfi", "-t", f"{plan.duration:.3f}", "-i", "anullsrc=r=48000:cl=stereo"]
    audio = "1:a:0" if plan.silent_audio else "0:a:0"
    if plan.copy_video:
        args += ["-map", "0:v:0", "-c:v", "copy"]
    else:
        chain = []
        if plan.extend_seconds:
            chain.append(f"tpad=stop_mode=clone:stop_duration={plan.extend_seconds:.3f}")
        chain += [f"fps={plan.fps:g}", *_geometry_filters(plan, "bicubic"), "format=yuv420p"]
        args += ["-filter_complex", f"[0:v:0]{','.join(chain)}[v]", "-map", "[v]"]
        args += ["-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
        args += ["-r", f"{plan.fps:g}", "-crf", "12" if plan.min_bytes else "20"]
        if plan.max_bitrate:
            args += ["-maxrate", str(plan.max_bitrate), "-bufsize", str(plan.max_bitrate * 2)]
    args += ["-map", audio, "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000"]
    args += ["-t", f"{plan.duration:.3f}", "-movflags", "+faststart", "-map_metadata", "-1", "-f", "mp4"]
    return [*args, "-y", str(target)]


def pad_to_size(path: Path, min_bytes: int) -> None:
    """Append an MP4 `free` box (the format's own padding, skipped by every reader) up to `min_bytes` and a margin.

    A short, simple clip can be smaller than a platform's byte minimum even at high quality; padding is what the
    format provides for exactly that, and it changes nothing that is decoded.
    """
    size = path.stat().st_size
    if size >= min_bytes:
        return
    missing = max(8, math.ceil((min_bytes - size) * 1.02) + 1024)
    with path.open("ab") as handle:
        handle.write(_BOX_HEADER.pack(missing, b"free"))
        handle.write(b"\0" * (missing - 8))
