"""Does a media file meet a platform's spec, and if not, can it be converted and how (a plan the renderer follows).

`assess` never looks at a file: it takes what the probe measured (`MediaProbe`) and the spec, and answers one of
CONFORMS (publish as it is), CONVERT (with a `RenditionPlan`) or IMPOSSIBLE (with the rule that cannot be met).
Choices made here, documented in docs/media.md:
- geometry is fixed by scaling and **padding** (black bars), never by cropping: nothing generated is cut off;
- a clip shorter than the minimum is extended by **holding its last frame**; a clip longer than the maximum is
  refused (cutting it would publish something other than what was made);
- a frame rate outside the range is re-timed (frames repeated or dropped, duration kept), to 30 fps when allowed;
- every video rendition is H.264 High, yuv420p, AAC (a silent track when there is none), index first (faststart);
  a byte minimum is met with higher quality and MP4 padding (a `free` box), a byte maximum with a bitrate cap;
- images become JPEG; one too large for the platform is re-encoded at lower quality, then smaller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from contentpipe.oauth.domain.media_specs import Bounds, MediaSpec
from contentpipe.oauth.domain.posts import MediaKind

MB = 1024 * 1024
# Above these, converting costs more memory and time than a post is worth: refuse at CreatePost instead.
MAX_CONVERTIBLE_IMAGE_BYTES = 50 * MB
MAX_CONVERTIBLE_IMAGE_PIXELS = 100_000_000
# Below this bitrate (a byte cap over a long clip) a video is not worth watching: refuse rather than mush it.
MIN_USEFUL_VIDEO_BITRATE = 150_000
TARGET_FPS = 30.0
# Clips extended to a minimum duration end this much after it, so rounding of the last frame never falls short.
DURATION_MARGIN = 0.25


class Verdict(StrEnum):
    CONFORMS = "CONFORMS"
    CONVERT = "CONVERT"
    IMPOSSIBLE = "IMPOSSIBLE"


@dataclass(frozen=True, slots=True)
class MediaProbe:
    """What a media file is, as measured (by the probe adapter)."""

    container: str  # MIME type from the file's bytes; "" when unknown
    size_bytes: int
    width: int = 0
    height: int = 0
    video_codec: str = ""
    video_profile: str = ""
    pixel_format: str = ""
    fps: float = 0.0
    duration: float = 0.0
    audio_codec: str = ""
    audio_profile: str = ""
    faststart: bool = False

    @property
    def kind(self) -> MediaKind | None:
        if self.container.startswith("video/"):
            return MediaKind.VIDEO
        if self.container.startswith("image/"):
            return MediaKind.IMAGE
        return None

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_codec)

    def summary(self) -> str:
        if self.kind is MediaKind.VIDEO:
            return (
                f"{self.container} {self.video_codec or '?'} {self.width}x{self.height} {self.fps:g} fps "
                f"{self.duration:g} s {self.size_bytes} bytes{' +' + self.audio_codec if self.audio_codec else ''}"
            )
        return f"{self.container or 'unknown'} {self.width}x{self.height} {self.size_bytes} bytes"


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str  # e.g. "fps", "duration", "container": the spec field that is not met
    description: str


@dataclass(frozen=True, slots=True)
class RenditionPlan:
    """How to turn the original into a conforming rendition; the renderer follows it literally."""

    kind: MediaKind
    output: str  # MIME type of the rendition
    width: int  # the picture, scaled
    height: int
    canvas_width: int  # the frame it is centred in (== width/height when nothing is padded)
    canvas_height: int
    fps: float = 0.0  # video: output frame rate
    duration: float = 0.0  # video: output duration (>= the source's when extended)
    extend_seconds: float = 0.0  # video: how long the last frame is held
    silent_audio: bool = False  # video: add a silent AAC track
    min_bytes: int = 0  # video: the rendition is at least this large (higher quality, then format padding)
    max_bitrate: int = 0  # video: bits/s cap (byte maximum); 0: none
    max_bytes: int = 0  # image: the rendition must not exceed it; 0: no limit
    copy_video: bool = False  # video: the picture stream conforms; only audio/index/container change (remux)

    @property
    def padded(self) -> bool:
        return (self.width, self.height) != (self.canvas_width, self.canvas_height)

    def describe(self) -> str:
        parts = [f"{self.output} {self.canvas_width}x{self.canvas_height}"]
        if self.padded:
            parts.append(f"picture {self.width}x{self.height} padded")
        if self.kind is MediaKind.VIDEO:
            parts.append(f"{self.fps:g} fps {self.duration:g} s")
            if self.extend_seconds:
                parts.append(f"last frame held {self.extend_seconds:g} s")
            if self.silent_audio:
                parts.append("silent AAC track")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Assessment:
    verdict: Verdict
    violations: tuple[Violation, ...] = ()
    plan: RenditionPlan | None = None
    blocking: Violation | None = None  # IMPOSSIBLE: the rule that cannot be met

    @property
    def message(self) -> str:
        if self.blocking is not None:
            return self.blocking.description
        return "; ".join(v.description for v in self.violations) or "conforms"


@dataclass(slots=True)
class _Checks:
    spec: MediaSpec
    found: list[Violation] = field(default_factory=list)

    def bound(self, rule: str, value: float, bounds: Bounds, what: str, unit: str = "") -> None:
        if not bounds.holds(value):
            self.found.append(
                Violation(rule, f"{what} {value:g}{unit}; {self.spec.name}s need {bounds.describe(unit)}")
            )

    def member(self, rule: str, value: str, allowed: frozenset[str], what: str) -> None:
        if allowed and value not in allowed:
            self.found.append(
                Violation(rule, f"{what} {value or 'unknown'}; {self.spec.name}s need {' or '.join(sorted(allowed))}")
            )


def violations(probe: MediaProbe, spec: MediaSpec) -> list[Violation]:
    """Every rule of `spec` that `probe` breaks (empty: it conforms)."""
    c = _Checks(spec)
    c.member("container", probe.container, spec.containers, "format")
    if probe.width and probe.height:
        c.bound("width", probe.width, spec.width, "width", " px")
        c.bound("height", probe.height, spec.height, "height", " px")
        c.bound("side", min(probe.width, probe.height), spec.side, "shorter side", " px")
        c.bound("side", max(probe.width, probe.height), spec.side, "longer side", " px")
        c.bound("long_side", max(probe.width, probe.height), spec.long_side, "longer side", " px")
        c.bound("short_side", min(probe.width, probe.height), spec.short_side, "shorter side", " px")
        c.bound("aspect", round(probe.width / probe.height, 4), spec.aspect, "aspect ratio (width/height)")
        c.bound("megapixels", round(probe.width * probe.height / 1e6, 2), spec.megapixels, "size", " MP")
    c.bound("bytes", probe.size_bytes, spec.size_bytes, "file size", " bytes")
    if spec.kind is MediaKind.VIDEO:
        c.member("video_codec", probe.video_codec, spec.video_codecs, "video codec")
        c.member("video_profile", probe.video_profile, spec.video_profiles, "H.264 profile")
        c.member("pixel_format", probe.pixel_format, spec.pixel_formats, "pixel format")
        c.bound("fps", round(probe.fps, 3), spec.fps, "frame rate", " fps")
        c.bound("duration", round(probe.duration, 3), spec.duration, "duration", " s")
        if probe.has_audio:
            c.member("audio_codec", probe.audio_codec, spec.audio_codecs, "audio codec")
            if spec.audio_codecs == frozenset({"aac"}) and probe.audio_profile and probe.audio_profile != "LC":
                c.found.append(Violation("audio_codec", f"AAC profile {probe.audio_profile}; {spec.name}s need LC"))
        elif spec.audio_required:
            c.found.append(Violation("audio", f"no audio track; {spec.name}s need one (a silent track is fine)"))
        if spec.faststart and not probe.faststart:
            c.found.append(Violation("faststart", f"the index (moov) is not first; {spec.name}s need faststart"))
    return c.found


def assess(probe: MediaProbe, spec: MediaSpec) -> Assessment:
    """CONFORMS, CONVERT with the plan, or IMPOSSIBLE with the rule that no conversion can meet."""
    if probe.kind is None or not probe.width or not probe.height:
        return _impossible("unreadable", "not an image or video that can be read")
    if probe.kind is not spec.kind:
        return _impossible("kind", f"the file is a {probe.kind.value.lower()}, the post says {spec.kind.value}")
    found = tuple(violations(probe, spec))
    if not found:
        return Assessment(Verdict.CONFORMS)
    if spec.kind is MediaKind.VIDEO:
        return _video_plan(probe, spec, found)
    return _image_plan(probe, spec, found)


def _impossible(rule: str, description: str, found: tuple[Violation, ...] = ()) -> Assessment:
    blocking = Violation(rule, description)
    return Assessment(Verdict.IMPOSSIBLE, found or (blocking,), blocking=blocking)


def _image_plan(probe: MediaProbe, spec: MediaSpec, found: tuple[Violation, ...]) -> Assessment:
    if probe.size_bytes > MAX_CONVERTIBLE_IMAGE_BYTES:
        return _impossible(
            "bytes",
            f"file size {probe.size_bytes} bytes; images over {MAX_CONVERTIBLE_IMAGE_BYTES} bytes are not converted "
            f"and {spec.name}s take {spec.size_bytes.describe(' bytes')}",
            found,
        )
    if probe.width * probe.height > MAX_CONVERTIBLE_IMAGE_PIXELS:
        return _impossible("megapixels", f"{probe.width}x{probe.height} is too large to convert", found)
    geometry = fit_geometry(probe.width, probe.height, spec, even=False)
    if geometry is None:
        return _impossible("size", f"no size of a {probe.width}x{probe.height} image meets {spec.name} rules", found)
    width, height, canvas_w, canvas_h = geometry
    plan = RenditionPlan(
        MediaKind.IMAGE,
        spec.output,
        width,
        height,
        canvas_w,
        canvas_h,
        max_bytes=int(spec.size_bytes.high or 0),
    )
    return Assessment(Verdict.CONVERT, found, plan)


def _video_plan(probe: MediaProbe, spec: MediaSpec, found: tuple[Violation, ...]) -> Assessment:
    if spec.duration.high is not None and probe.duration > spec.duration.high:
        return _impossible(
            "duration",
            f"duration {probe.duration:g} s; {spec.name}s are at most {spec.duration.high:g} s "
            "(contentpipe does not cut videos)",
            found,
        )
    if probe.duration <= 0:
        return _impossible("duration", "the video's duration cannot be read", found)
    geometry = fit_geometry(probe.width, probe.height, spec, even=True)
    if geometry is None:
        return _impossible("size", f"no size of a {probe.width}x{probe.height} video meets {spec.name} rules", found)
    width, height, canvas_w, canvas_h = geometry
    fps = target_fps(probe.fps, spec.fps)
    duration = probe.duration
    extend = 0.0
    if spec.duration.low is not None and duration < spec.duration.low:
        extend = round(spec.duration.low + DURATION_MARGIN - duration, 3)
        duration = round(duration + extend, 3)
    min_bytes = int(spec.size_bytes.low or 0)
    max_bitrate = 0
    if spec.size_bytes.high is not None and probe.size_bytes > spec.size_bytes.high * 0.9:
        max_bitrate = int(spec.size_bytes.high * 8 * 0.85 / duration)
        if max_bitrate < MIN_USEFUL_VIDEO_BITRATE:
            return _impossible(
                "bytes",
                f"file size {probe.size_bytes} bytes over {duration:g} s; {spec.name}s are at most "
                f"{spec.size_bytes.high:g} bytes and the bitrate would be too low to watch",
                found,
            )
    stream_rules = {v.rule for v in found} - {"container", "audio", "audio_codec", "faststart"}
    copy_video = not stream_rules and probe.video_codec == "h264" and not max_bitrate
    plan = RenditionPlan(
        MediaKind.VIDEO,
        spec.output,
        width,
        height,
        canvas_w,
        canvas_h,
        fps=fps,
        duration=duration,
        extend_seconds=extend,
        silent_audio=not probe.has_audio,
        min_bytes=min_bytes,
        max_bitrate=max_bitrate,
        copy_video=copy_video,
    )
    return Assessment(Verdict.CONVERT, found, plan)


def target_fps(fps: float, bounds: Bounds) -> float:
    """The source's rate when allowed, else 30 fps clamped into the range (re-timed: duration kept)."""
    if fps > 0 and bounds.holds(fps) and fps <= 60:
        return fps
    wanted = TARGET_FPS
    if bounds.low is not None:
        wanted = max(wanted, bounds.low)
    if bounds.high is not None:
        wanted = min(wanted, bounds.high)
    return wanted


def fit_geometry(width: int, height: int, spec: MediaSpec, *, even: bool) -> tuple[int, int, int, int] | None:
    """(picture w, h, canvas w, h): the source scaled as little as possible and padded to an allowed aspect.

    None when no scale meets every size rule at once (contradictory bounds).
    """
    aspect = width / height
    canvas_w0, canvas_h0 = float(width), float(height)
    low, high = spec.aspect.low, spec.aspect.high
    if low is not None and aspect < low:
        canvas_w0 = height * low
    elif high is not None and aspect > high:
        canvas_h0 = width / high
    lows: list[float] = [0.0]
    highs: list[float] = [math.inf]

    def limit(bounds: Bounds, value: float) -> None:
        if bounds.low is not None:
            lows.append(bounds.low / value)
        if bounds.high is not None:
            highs.append(bounds.high / value)

    limit(spec.width, canvas_w0)
    limit(spec.height, canvas_h0)
    limit(spec.side, canvas_w0)
    limit(spec.side, canvas_h0)
    limit(spec.long_side, max(canvas_w0, canvas_h0))
    limit(spec.short_side, min(canvas_w0, canvas_h0))
    if spec.megapixels.high is not None:
        highs.append(math.sqrt(spec.megapixels.high * 1e6 / (canvas_w0 * canvas_h0)))
    lo, hi = max(lows), min(highs)
    if lo > hi * 1.0001:
        return None
    scale = min(max(1.0, lo), hi)

    def size(value: float, *, up: bool) -> int:
        if not even:
            return max(1, math.ceil(value - 1e-6) if up else math.floor(value + 1e-6))
        rounded = math.ceil(value / 2 - 1e-6) * 2 if up else math.floor(value / 2 + 1e-6) * 2
        return max(2, rounded)

    # Round the canvas up when a minimum is what forced the scale, down otherwise (stay within the maximum).
    up = scale > 1.0 and scale == lo
    canvas_w, canvas_h = size(canvas_w0 * scale, up=up), size(canvas_h0 * scale, up=up)
    picture_w = min(canvas_w, size(width * scale, up=up))
    picture_h = min(canvas_h, size(height * scale, up=up))
    return picture_w, picture_h, canvas_w, canvas_h
