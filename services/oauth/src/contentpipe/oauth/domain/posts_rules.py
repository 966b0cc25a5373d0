"""Each platform's publishing rules (as its API reference states them) and the validation of a new post.

Everything that can be checked before queueing is checked here, with one field violation per problem, so a post
the platform would refuse never waits in the queue (nor spends quota) first.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from contentpipe.common.errors import FieldViolation, InvalidArgument
from contentpipe.oauth.domain.media_conformance import MAX_CONVERTIBLE_IMAGE_BYTES
from contentpipe.oauth.domain.media_specs import MediaSpec, SpecTable, spec_for
from contentpipe.oauth.domain.posts import Media, MediaKind, Platform, PostOptions

TIKTOK_PRIVACY_LEVELS = ("PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY")
YOUTUBE_PRIVACY = ("public", "unlisted", "private")
LINKEDIN_VISIBILITY = ("PUBLIC", "CONNECTIONS")


@dataclass(frozen=True, slots=True)
class PlatformRules:
    """What one platform accepts in a single post."""

    label: str
    max_text: int
    max_photo_text: int = 0  # the limit when the post has images and no video (0: max_text)
    text_weighted: bool = False  # X: twitter-text weights (URLs 23, emoji and CJK 2)
    text_in_bytes: bool = False
    max_images: int = 0
    max_videos: int = 0
    mix_allowed: bool = False  # images and a video in one post
    media_required: bool = False
    text_or_media_required: bool = True
    needs_public_url: bool = False  # the platform fetches the media itself (no file://)
    images_need_public_url: bool = False


RULES: dict[Platform, PlatformRules] = {
    # C1/F2: 280 weighted characters; 4 photos or 1 GIF or 1 video; video 512 MB, 0.5-140 s; images 5 MB.
    Platform.TWITTER: PlatformRules(
        "X",
        280,
        text_weighted=True,
        max_images=4,
        max_videos=1,
    ),
    # C2: commentary 3,000; one video or up to 20 images (multiImage); video 3 s - 30 min, 500 MB.
    Platform.LINKEDIN: PlatformRules(
        "LinkedIn",
        3000,
        max_images=20,
        max_videos=1,
    ),
    # C3: caption 2,200; media required, carousel up to 10; Reels 3 s - 15 min; Meta fetches the URL itself.
    Platform.INSTAGRAM: PlatformRules(
        "Instagram",
        2200,
        max_images=10,
        max_videos=10,
        mix_allowed=True,
        media_required=True,
        needs_public_url=True,
    ),
    # C4/F2: a video's caption is its title, 2,200; a photo post's is its description, 4,000. One video
    # (FILE_UPLOAD, 4 GB) or photos (PULL_FROM_URL only, up to 35).
    Platform.TIKTOK: PlatformRules(
        "TikTok",
        2200,
        max_photo_text=4000,
        max_images=35,
        max_videos=1,
        media_required=True,
        images_need_public_url=True,
    ),
    # C5: message 63,206; up to 10 photos (4 MB) or one video.
    Platform.FACEBOOK: PlatformRules(
        "Facebook",
        63206,
        max_images=10,
        max_videos=1,
    ),
    # C6: exactly one video; the text is the description, 5,000 bytes; 256 GB.
    Platform.GOOGLE: PlatformRules(
        "YouTube",
        5000,
        text_in_bytes=True,
        max_videos=1,
        media_required=True,
        text_or_media_required=False,
    ),
    Platform.OUTBOX: PlatformRules("the outbox", 100_000, max_images=20, max_videos=20, mix_allowed=True),
}


@dataclass(frozen=True, slots=True)
class NewPost:
    """What CreatePost asks for, before validation."""

    connection_id: str
    text: str
    media: tuple[Media, ...]
    options: PostOptions
    publish_time: datetime | None = None
    request_id: str = ""
    post_id: str = ""  # the id the caller chose (AIP-133); empty: the service chooses


def x_weighted_length(text: str) -> int:
    """The length X counts (twitter-text v3): any URL is 23, most emoji and CJK characters 2, the rest 1."""
    return int(_parse_tweet()(text).weightedLength)


@functools.cache
def _parse_tweet() -> Callable[[str], Any]:
    # Imported at the first X post, not at start-up: twitter-text (with pkg_resources) costs ~8 MB and ~0.7 s of
    # import in every oauth process, most of which never validate an X post.
    with warnings.catch_warnings():  # it imports pkg_resources, which warns that it is deprecated
        warnings.simplefilter("ignore")
        from twitter_text import parse_tweet  # type: ignore[import-untyped]
    return parse_tweet  # type: ignore[no-any-return]


def text_length(text: str, rules: PlatformRules) -> int:
    if rules.text_weighted:
        return x_weighted_length(text)
    return len(text.encode()) if rules.text_in_bytes else len(text)


def text_too_long(text: str, platform: Platform, *, photos_only: bool = False) -> str | None:
    """Why `text` is too long for `platform` (None: it fits), in the platform's own way of counting."""
    rules = RULES[platform]
    limit = rules.max_photo_text if rules.max_photo_text and photos_only else rules.max_text
    length = text_length(text, rules)
    if length <= limit:
        return None
    unit = "bytes" if rules.text_in_bytes else "weighted characters" if rules.text_weighted else "characters"
    return f"{length} {unit}; {rules.label} allows at most {limit}"


def validate_post(
    post: NewPost, platform: Platform, *, sub_accounts: tuple[str, ...] | None = None, specs: SpecTable | None = None
) -> None:
    """Raise InvalidArgument with every violation of `platform`'s rules (fields named as in the API)."""
    rules = RULES[platform]
    violations: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        violations.append(FieldViolation(field, description))

    if len(post.request_id) > 128:
        bad("request_id", "at most 128 characters")
    images = [m for m in post.media if m.kind is MediaKind.IMAGE]
    videos = [m for m in post.media if m.kind is MediaKind.VIDEO]
    too_long = text_too_long(post.text, platform, photos_only=bool(images) and not videos)
    if too_long:
        bad("post.text", too_long)
    if rules.media_required and not post.media:
        needs = "a video" if not rules.max_images else "at least one image or video"
        bad("post.media", f"{rules.label} needs {needs}")
    if rules.text_or_media_required and not post.text.strip() and not post.media:
        bad("post.text", "a post needs text or media")
    if platform is Platform.GOOGLE and (images or len(videos) != 1):
        bad("post.media", "YouTube takes exactly one video")
    else:
        if len(images) > rules.max_images:
            bad("post.media", f"{len(images)} images; {rules.label} allows at most {rules.max_images}")
        if len(videos) > rules.max_videos:
            bad("post.media", f"{len(videos)} videos; {rules.label} allows at most {rules.max_videos}")
        if images and videos and not rules.mix_allowed:
            bad("post.media", f"{rules.label} takes images or a video, not both")
        if platform is Platform.INSTAGRAM and len(post.media) > 10:
            bad("post.media", "a carousel holds at most 10 items")

    for index, item in enumerate(post.media):
        _validate_media(item, index, rules, spec_for(platform, MediaKind.VIDEO, specs), bad)

    _validate_options(post.options, platform, sub_accounts, bad)
    if violations:
        first = violations[0]
        raise InvalidArgument(f"{first.field}: {first.description}", violations, reason="POST_INVALID")


def _validate_media(item: Media, index: int, rules: PlatformRules, spec: MediaSpec | None, bad: object) -> None:
    assert callable(bad)
    prefix = f"post.media[{index}]"
    try:
        parts = urlsplit(item.uri)
        scheme = parts.scheme
        _ = parts.port  # raises for a port out of range
    except ValueError:  # e.g. a bracketed host that is no IPv6 address
        bad(f"{prefix}.uri", "not a valid URL")
        return
    if not item.uri:
        bad(f"{prefix}.uri", "required")
    elif scheme not in ("http", "https", "file"):
        bad(f"{prefix}.uri", "must be an http(s) URL or a file:// URI of contentpipe's storage")
    elif scheme == "file" and (
        rules.needs_public_url or (rules.images_need_public_url and item.kind is MediaKind.IMAGE)
    ):
        bad(f"{prefix}.uri", f"{rules.label} fetches media from a public URL; a file:// URI cannot be reached")
    if item.content_type:
        family = item.content_type.split("/", 1)[0]
        expected = "video" if item.kind is MediaKind.VIDEO else "image"
        if family != expected:
            bad(f"{prefix}.content_type", f"{item.content_type} does not match kind {item.kind.value}")
    if item.size_bytes < 0:
        bad(f"{prefix}.size_bytes", "must not be negative")
    # Sizes and durations come from the media spec table (one home for them); only what no conversion can fix is
    # refused here: a short clip is extended, a PNG re-encoded, a large image shrunk by the conformer at publish.
    if item.kind is MediaKind.IMAGE:
        if item.size_bytes > MAX_CONVERTIBLE_IMAGE_BYTES:
            bad(
                f"{prefix}.size_bytes",
                f"{item.size_bytes} bytes; images over {MAX_CONVERTIBLE_IMAGE_BYTES} bytes are not converted",
            )
        return
    max_bytes = spec.size_bytes.high if spec is not None else None
    if max_bytes is not None and item.size_bytes > max_bytes:
        bad(f"{prefix}.size_bytes", f"{item.size_bytes} bytes; {rules.label} videos are at most {max_bytes:g}")
    max_seconds = spec.duration.high if spec is not None else None
    if item.duration_seconds < 0:
        bad(f"{prefix}.duration_seconds", "must not be negative")
    elif max_seconds is not None and item.duration_seconds > max_seconds:
        bad(
            f"{prefix}.duration_seconds",
            f"{item.duration_seconds:g} s; {rules.label} videos are at most {max_seconds:g} s "
            "(contentpipe does not cut videos)",
        )


def _validate_options(
    options: PostOptions, platform: Platform, sub_accounts: tuple[str, ...] | None, bad: object
) -> None:
    assert callable(bad)
    if platform is Platform.TIKTOK:
        if not options.tiktok_privacy_level:
            bad("post.options.tiktok.privacy_level", f"required for TikTok: one of {', '.join(TIKTOK_PRIVACY_LEVELS)}")
        elif options.tiktok_privacy_level not in TIKTOK_PRIVACY_LEVELS:
            bad("post.options.tiktok.privacy_level", f"one of {', '.join(TIKTOK_PRIVACY_LEVELS)}")
    elif platform is Platform.GOOGLE:
        title = options.youtube_title
        if not title.strip():
            bad("post.options.youtube.title", "required for YouTube (1 to 100 characters)")
        elif len(title) > 100:
            bad("post.options.youtube.title", f"{len(title)} characters; at most 100")
        elif "<" in title or ">" in title:
            bad("post.options.youtube.title", "must not contain < or >")
        if len(options.youtube_description.encode()) > 5000:
            bad("post.options.youtube.description", "at most 5,000 bytes")
        if options.youtube_privacy_status and options.youtube_privacy_status not in YOUTUBE_PRIVACY:
            bad("post.options.youtube.privacy_status", f"one of {', '.join(YOUTUBE_PRIVACY)}")
        if sum(len(t) for t in options.youtube_tags) > 500:
            bad("post.options.youtube.tags", "at most 500 characters in all")
        if options.youtube_category_id and not options.youtube_category_id.isdigit():
            bad("post.options.youtube.category_id", "a numeric YouTube category id")
    elif platform is Platform.FACEBOOK:
        if not options.facebook_page_id:
            bad("post.options.facebook.page_id", "required for Facebook: the Page to post to")
        elif sub_accounts is not None and options.facebook_page_id not in sub_accounts:
            bad("post.options.facebook.page_id", "not one of this connection's Pages")
    elif platform is Platform.LINKEDIN:
        if options.linkedin_visibility and options.linkedin_visibility not in LINKEDIN_VISIBILITY:
            bad("post.options.linkedin.visibility", "PUBLIC or CONNECTIONS")
    elif platform is Platform.TWITTER:
        reply = options.twitter_reply_to_post_id
        if reply and not reply.isdigit():
            bad("post.options.twitter.reply_to_post_id", "a numeric post id")
