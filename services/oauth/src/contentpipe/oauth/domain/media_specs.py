"""What each platform's publish call accepts as an image or a video, as data (docs/media.md explains each row).

Where the platforms' own guides and the tools that post to them disagree, the row holds the stricter value: media
that meet it are accepted everywhere. A `None` bound is no limit. Containers are MIME types; codecs, profiles and
pixel formats use ffmpeg's names (`h264`, `High`, `yuv420p`, `aac`, `LC`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from contentpipe.oauth.domain.posts import MediaKind, Platform

KB = 1000
MB = 1024 * 1024
GB = 1024 * MB


@dataclass(frozen=True, slots=True)
class Bounds:
    """An inclusive range; either end may be open (None)."""

    low: float | None = None
    high: float | None = None

    def holds(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self, unit: str = "") -> str:
        def fmt(value: float) -> str:
            return f"{int(value) if float(value).is_integer() else round(value, 3)}{unit}"

        if self.low is not None and self.high is not None:
            return f"{fmt(self.low)} to {fmt(self.high)}"
        if self.low is not None:
            return f"at least {fmt(self.low)}"
        if self.high is not None:
            return f"at most {fmt(self.high)}"
        return "any"


ANY = Bounds()


@dataclass(frozen=True, slots=True)
class MediaSpec:
    """One platform's rules for one kind of media (image or video)."""

    platform: Platform
    kind: MediaKind
    label: str
    containers: frozenset[str]  # MIME types accepted as they are
    output: str  # the MIME type a rendition is written as
    video_codecs: frozenset[str] = frozenset()  # empty: any
    video_profiles: frozenset[str] = frozenset()
    pixel_formats: frozenset[str] = frozenset()
    audio_codecs: frozenset[str] = frozenset()  # when there is audio
    audio_required: bool = False
    faststart: bool = False  # the index (moov) before the media data: the platform may start reading at once
    fps: Bounds = ANY
    duration: Bounds = ANY  # seconds
    width: Bounds = ANY  # pixels
    height: Bounds = ANY
    side: Bounds = ANY  # each side
    long_side: Bounds = ANY
    short_side: Bounds = ANY
    aspect: Bounds = ANY  # width / height
    megapixels: Bounds = ANY
    size_bytes: Bounds = ANY

    @property
    def name(self) -> str:
        return f"{self.label} {self.kind.value.lower()}"


_MP4 = frozenset({"video/mp4"})
_MP4_MOV = frozenset({"video/mp4", "video/quicktime"})
_H264 = frozenset({"h264"})

_TABLE: tuple[MediaSpec, ...] = (
    MediaSpec(
        Platform.INSTAGRAM,
        MediaKind.IMAGE,
        "Instagram",
        containers=frozenset({"image/jpeg"}),
        output="image/jpeg",
        width=Bounds(320, 1440),
        aspect=Bounds(4 / 5, 1.91),
        size_bytes=Bounds(None, 8 * MB),
    ),
    MediaSpec(
        Platform.INSTAGRAM,
        MediaKind.VIDEO,
        "Instagram",
        containers=_MP4_MOV,
        output="video/mp4",
        video_codecs=frozenset({"h264", "hevc"}),
        pixel_formats=frozenset({"yuv420p"}),
        audio_codecs=frozenset({"aac"}),
        audio_required=True,
        faststart=True,
        fps=Bounds(23, 60),
        duration=Bounds(3, 15 * 60),
        width=Bounds(None, 1920),
        aspect=Bounds(0.01, 10),
        size_bytes=Bounds(None, 300 * MB),
    ),
    MediaSpec(
        Platform.TIKTOK,
        MediaKind.IMAGE,
        "TikTok",
        containers=frozenset({"image/jpeg", "image/webp"}),
        output="image/jpeg",
        long_side=Bounds(None, 1920),
        short_side=Bounds(None, 1080),
        size_bytes=Bounds(None, 20 * MB),
    ),
    MediaSpec(
        Platform.TIKTOK,
        MediaKind.VIDEO,
        "TikTok",
        containers=frozenset({"video/mp4", "video/quicktime", "video/webm"}),
        output="video/mp4",
        video_codecs=frozenset({"h264", "hevc", "vp8", "vp9"}),
        fps=Bounds(23, 60),
        duration=Bounds(3, 10 * 60),
        side=Bounds(360, 4096),
        size_bytes=Bounds(None, 4 * GB),
    ),
    MediaSpec(
        Platform.TWITTER,
        MediaKind.IMAGE,
        "X",
        containers=frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"}),
        output="image/jpeg",
        size_bytes=Bounds(None, 5 * MB),
    ),
    MediaSpec(
        Platform.TWITTER,
        MediaKind.VIDEO,
        "X",
        containers=_MP4,
        output="video/mp4",
        video_codecs=_H264,
        video_profiles=frozenset({"High", "Main"}),
        pixel_formats=frozenset({"yuv420p"}),
        audio_codecs=frozenset({"aac"}),
        audio_required=True,
        fps=Bounds(None, 60),
        duration=Bounds(0.5, 140),
        side=Bounds(32, None),
        long_side=Bounds(None, 1920),  # 1920x1200 landscape, 1200x1920 portrait
        short_side=Bounds(None, 1200),
        aspect=Bounds(1 / 3, 3),
        size_bytes=Bounds(None, 512 * MB),
    ),
    MediaSpec(
        Platform.LINKEDIN,
        MediaKind.IMAGE,
        "LinkedIn",
        containers=frozenset({"image/jpeg", "image/png", "image/gif"}),
        output="image/jpeg",
        megapixels=Bounds(None, 36),
    ),
    MediaSpec(
        Platform.LINKEDIN,
        MediaKind.VIDEO,
        "LinkedIn",
        containers=_MP4,
        output="video/mp4",
        video_codecs=_H264,
        fps=Bounds(10, 60),
        duration=Bounds(3, 30 * 60),
        size_bytes=Bounds(75 * KB, 500 * MB),
    ),
    MediaSpec(
        Platform.FACEBOOK,
        MediaKind.IMAGE,
        "Facebook",
        containers=frozenset({"image/jpeg", "image/png"}),
        output="image/jpeg",
        size_bytes=Bounds(None, 4 * MB),
    ),
    MediaSpec(
        Platform.FACEBOOK,
        MediaKind.VIDEO,
        "Facebook",
        containers=_MP4_MOV,
        output="video/mp4",
        video_codecs=_H264,
        audio_codecs=frozenset({"aac"}),
        audio_required=True,
        fps=Bounds(None, 60),
        duration=Bounds(1, 240 * 60),
        size_bytes=Bounds(None, 10 * GB),
    ),
    MediaSpec(
        Platform.GOOGLE,
        MediaKind.VIDEO,
        "YouTube",
        containers=frozenset({"video/mp4", "video/quicktime", "video/webm"}),
        output="video/mp4",
        duration=Bounds(1, None),
        size_bytes=Bounds(None, 256 * GB),
    ),
)

SpecTable = Mapping[tuple[Platform, MediaKind], MediaSpec]
SPECS: SpecTable = {(spec.platform, spec.kind): spec for spec in _TABLE}
_BOUNDS = {
    "fps", "duration", "width", "height", "side", "long_side", "short_side", "aspect", "megapixels", "size_bytes",
}  # fmt: skip
_SETS = {"containers", "video_codecs", "video_profiles", "pixel_formats", "audio_codecs"}
_FLAGS = {"audio_required", "faststart"}


def spec_for(platform: Platform, kind: MediaKind, table: SpecTable | None = None) -> MediaSpec | None:
    """The rules media of `kind` must meet to be published on `platform`; None: the platform takes anything (outbox)
    or does not take that kind at all (the post rules refuse it before media are looked at)."""
    return (SPECS if table is None else table).get((platform, kind))


def with_overrides(overrides: Mapping[str, Mapping[str, Any]]) -> SpecTable:
    """The table with some rows' fields replaced, e.g. `{"twitter/video": {"duration": [0.5, 600]}}` (a platform
    that changed a limit, or an account with larger ones). Bounds are `[low, high]` (null: open), sets are lists.
    Raises ValueError naming the bad key or field."""
    table = dict(SPECS)
    for key, fields in overrides.items():
        platform_name, _, kind_name = key.partition("/")
        try:
            target = (Platform(platform_name), MediaKind(kind_name.upper()))
        except ValueError:
            raise ValueError(f"{key!r}: expected <platform>/<image|video>, e.g. twitter/video") from None
        spec = table.get(target)
        if spec is None:
            raise ValueError(f"{key!r}: no such row in the media spec table")
        changes: dict[str, Any] = {}
        for name, value in fields.items():
            if name in _BOUNDS:
                if not (isinstance(value, list) and len(value) == 2):
                    raise ValueError(f"{key}.{name}: expected [low, high] (null for an open end)")
                try:
                    low, high = (None if v is None else float(v) for v in value)
                except (TypeError, ValueError):
                    raise ValueError(f"{key}.{name}: bounds must be numbers or null") from None
                changes[name] = Bounds(low, high)
            elif name in _SETS and isinstance(value, list):
                changes[name] = frozenset(str(v) for v in value)
            elif name in _FLAGS and isinstance(value, bool):
                changes[name] = value
            else:
                raise ValueError(f"{key}.{name}: not an overridable field of the right type")
        table[target] = replace(spec, **changes)
    return table


def all_specs() -> tuple[MediaSpec, ...]:
    return _TABLE
