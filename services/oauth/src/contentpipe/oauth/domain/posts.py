"""A post to one account and its life cycle: QUEUED -> PUBLISHING -> PUBLISHED | FAILED | CANCELED, or UNCONFIRMED.

The one rule everything here serves: a post is never published twice. `create_sent_time` is set (and committed)
before the platform's irreversible create call; once it is set, the post is only ever reconciled with the platform
or resolved by a person, never blindly published again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from contentpipe.common.error_class import ErrorClass

# Posts go out on their connection's platform: one enum, re-exported here for the posting code.
from contentpipe.oauth.domain.connections import Platform as Platform  # noqa: PLC0414 (explicit re-export)


class PostState(StrEnum):
    QUEUED = "QUEUED"
    PUBLISHING = "PUBLISHING"
    PUBLISHED = "PUBLISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNCONFIRMED = "UNCONFIRMED"

    @property
    def terminal(self) -> bool:
        return self in (PostState.PUBLISHED, PostState.FAILED, PostState.CANCELED)


# Starting an attempt, what a worker taking a due post means: a QUEUED post begins a new attempt (PUBLISHING, one
# more attempt counted); a crashed worker's PUBLISHING post and an UNCONFIRMED one (taken to be reconciled) keep their
# state and count; either way the post's update_time is when it was taken. The queue's claim makes this change in the
# statement that leases the post (the post repository's `claim`, from these constants), so a worker holds the post
# as `Post.start_attempt` leaves it without saving it first.
WORK_STATES = (PostState.QUEUED, PostState.PUBLISHING, PostState.UNCONFIRMED)
NEW_ATTEMPT_FROM = PostState.QUEUED
NEW_ATTEMPT_STATE = PostState.PUBLISHING


class MediaKind(StrEnum):
    IMAGE = "IMAGE"
    VIDEO = "VIDEO"


class IllegalTransition(Exception):
    """A state change the life cycle does not allow (a bug in the caller, or a race lost to another writer)."""


@dataclass(frozen=True, slots=True)
class Media:
    uri: str
    kind: MediaKind
    content_type: str = ""
    size_bytes: int = 0
    duration_seconds: float = 0.0
    width: int = 0
    height: int = 0
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "kind": self.kind.value,
            "content_type": self.content_type,
            "size_bytes": self.size_bytes,
            "duration_seconds": self.duration_seconds,
            "width": self.width,
            "height": self.height,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Media:
        return cls(
            uri=str(data["uri"]),
            kind=MediaKind(data["kind"]),
            content_type=str(data.get("content_type", "")),
            size_bytes=int(data.get("size_bytes", 0)),
            duration_seconds=float(data.get("duration_seconds", 0.0)),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            sha256=str(data.get("sha256", "")),
        )

    @property
    def mime(self) -> str:
        if self.content_type:
            return self.content_type
        return "video/mp4" if self.kind is MediaKind.VIDEO else "image/jpeg"


@dataclass(frozen=True, slots=True)
class PostOptions:
    """Per-platform options, flattened; only the connection's platform's fields are read."""

    twitter_reply_to_post_id: str = ""
    linkedin_visibility: str = ""
    instagram_share_to_feed: bool | None = None
    tiktok_privacy_level: str = ""
    tiktok_disable_comment: bool = False
    tiktok_disable_duet: bool = False
    tiktok_disable_stitch: bool = False
    youtube_title: str = ""
    youtube_description: str = ""
    youtube_privacy_status: str = ""
    youtube_tags: tuple[str, ...] = ()
    youtube_category_id: str = ""
    youtube_made_for_kids: bool = False
    facebook_page_id: str = ""
    # Made by AI: disclosed where the platform takes it (TikTok is_aigc, YouTube containsSyntheticMedia, X).
    ai_generated: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["youtube_tags"] = list(self.youtube_tags)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostOptions:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "youtube_tags" in known:
            known["youtube_tags"] = tuple(known["youtube_tags"])
        return cls(**known)


@dataclass(frozen=True, slots=True)
class PostError:
    error_class: ErrorClass
    reason: str
    message: str
    time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "error_class": self.error_class.value,
            "reason": self.reason,
            "message": self.message,
            "time": self.time.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostError:
        return cls(
            error_class=ErrorClass(data["error_class"]),
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
            time=datetime.fromisoformat(str(data["time"])),
        )


_URL = re.compile(r"https?://\S+")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Text as platforms echo it back: links are rewritten (t.co), whitespace collapsed; so drop both."""
    return _SPACE.sub(" ", _URL.sub("", text)).strip().casefold()


def content_fingerprint(text: str, media: tuple[Media, ...] | list[Media]) -> str:
    """Identifies our content among an account's recent posts (reconciliation after an unknown outcome)."""
    digest = hashlib.sha256(normalize_text(text).encode())
    digest.update(f"|{len(media)}".encode())
    return digest.hexdigest()[:32]


@dataclass(slots=True)
class Post:
    id: str
    owner: str
    connection_id: str
    platform: Platform
    text: str
    media: tuple[Media, ...]
    options: PostOptions
    create_time: datetime
    publish_time: datetime | None = None
    request_id: str = ""
    account_id: str = ""
    state: PostState = PostState.QUEUED
    platform_post_id: str = ""
    permalink: str = ""
    attempts: int = 0
    last_error: PostError | None = None
    update_time: datetime | None = None
    published_time: datetime | None = None
    next_attempt_time: datetime | None = None
    # When the irreversible create call was (about to be) sent. Set: never publish blindly again.
    create_sent_time: datetime | None = None
    # Platform-specific checkpoints (media ids, container id, upload session URI, publish id, ...).
    progress: dict[str, Any] = field(default_factory=dict)
    reconcile_attempts: int = 0
    # W3C trace context of the call that created it: the worker's span continues that trace (opaque here).
    trace_context: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        # Empty for a post that was only validated (validate_only): it exists nowhere.
        return f"posts/{self.id}" if self.id else ""

    @property
    def connection(self) -> str:
        return f"connections/{self.connection_id}"

    @property
    def fingerprint(self) -> str:
        return content_fingerprint(self.text, self.media)

    def _require(self, *states: PostState) -> None:
        if self.state not in states:
            raise IllegalTransition(f"{self.name} is {self.state}, expected one of {[s.value for s in states]}")

    # ------------------------------------------------------------ queue side

    def start_attempt(self, now: datetime) -> None:
        """A worker took the post (see WORK_STATES; the queue's claim applies this same change as it leases it)."""
        self._require(*WORK_STATES)
        if self.state is NEW_ATTEMPT_FROM:
            self.attempts += 1
            self.state = NEW_ATTEMPT_STATE
        self.update_time = now

    def arm_create(self, now: datetime) -> None:
        """Recorded (and committed by the caller) right before the irreversible create call is sent."""
        self._require(PostState.PUBLISHING)
        if self.create_sent_time is not None:
            raise IllegalTransition(f"{self.name}: create already sent at {self.create_sent_time.isoformat()}")
        self.create_sent_time = now
        self.update_time = now

    def record_platform_id(self, platform_post_id: str, permalink: str, now: datetime) -> None:
        """The platform answered the create call: its id is saved before anything else happens."""
        self._require(PostState.PUBLISHING, PostState.UNCONFIRMED)
        self.platform_post_id = platform_post_id
        if permalink:
            self.permalink = permalink
        self.update_time = now

    def mark_published(self, platform_post_id: str, permalink: str, now: datetime) -> None:
        self._require(PostState.PUBLISHING, PostState.UNCONFIRMED)
        if not platform_post_id:
            raise IllegalTransition(f"{self.name}: published without a platform id")
        self.state = PostState.PUBLISHED
        self.platform_post_id = platform_post_id
        self.permalink = permalink or self.permalink
        self.published_time = now
        self.update_time = now
        self.next_attempt_time = None

    def fail(self, error: PostError) -> None:
        self._require(PostState.PUBLISHING, PostState.UNCONFIRMED, PostState.QUEUED)
        self.state = PostState.FAILED
        self.last_error = error
        self.update_time = error.time
        self.next_attempt_time = None

    def defer(self, until: datetime, error: PostError | None, now: datetime) -> None:
        """Back to the queue until `until` (backoff or rate-limit reset). Only before the create call was sent."""
        self._require(PostState.PUBLISHING, PostState.QUEUED)
        if self.create_sent_time is not None:
            raise IllegalTransition(f"{self.name}: create was sent; it must be reconciled, not re-queued")
        self.state = PostState.QUEUED
        self.next_attempt_time = until
        if error is not None:
            self.last_error = error
        self.update_time = now

    def mark_unconfirmed(self, error: PostError, retry_at: datetime | None) -> None:
        """Outcome unknown. `retry_at` set: the worker asks the platform again then; None: a person decides."""
        self._require(PostState.PUBLISHING, PostState.UNCONFIRMED)
        self.state = PostState.UNCONFIRMED
        self.last_error = error
        self.next_attempt_time = retry_at
        self.reconcile_attempts += 1
        self.update_time = error.time

    def requeue_not_published(self, now: datetime, *, keep_progress: bool = True) -> None:
        """Reconciliation proved the create did not happen: publishing again is safe."""
        self._require(PostState.PUBLISHING, PostState.UNCONFIRMED)
        self.state = PostState.QUEUED
        self.create_sent_time = None
        if not keep_progress:
            self.progress = {}
        self.next_attempt_time = now
        self.update_time = now

    # ------------------------------------------------------------ API side

    def cancel(self, now: datetime) -> None:
        self._require(PostState.QUEUED)
        self.state = PostState.CANCELED
        self.next_attempt_time = None
        self.update_time = now

    def resolve(self, *, published: bool, platform_post_id: str, permalink: str, now: datetime) -> None:
        """A person checked the platform: it went out (PUBLISHED) or it did not (QUEUED again)."""
        self._require(PostState.UNCONFIRMED)
        if published:
            self.mark_published(platform_post_id, permalink, now)
        else:
            self.requeue_not_published(now, keep_progress=False)
            self.reconcile_attempts = 0

    def snapshot(self) -> Post:
        return replace(self, progress=dict(self.progress))


def utcnow() -> datetime:
    return datetime.now(UTC)
