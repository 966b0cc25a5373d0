"""Ports of the posting side: the connections' token provider, the post repository, publishers, rate-limit store.

`TokenProvider` is the connections side's seam (`service_layer/tokens.py`). Posting reads its results through
`connection_view` / `credentials_view` (posting's own, token-free-by-default views of them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from contentpipe.common.errors import AlreadyExists, FieldViolation
from contentpipe.common.workqueue import Lease
from contentpipe.oauth.domain.posts import Media, Platform, Post, PostState

# ---------------------------------------------------------------- connections (part 1's seam)


@dataclass(frozen=True, slots=True)
class ConnectionView:
    id: str
    owner: str
    platform: Platform
    status: str  # ACTIVE | REFRESH_FAILING | NEEDS_REAUTH | REVOKED
    account_id: str = ""
    username: str = ""
    sub_accounts: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"connections/{self.id}"

    @property
    def unusable(self) -> bool:
        return self.status in ("NEEDS_REAUTH", "REVOKED")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a publisher needs: the user's fresh access token, the account id and page tokens (Facebook)."""

    platform: Platform
    access_token: str = field(repr=False)
    account_id: str = ""
    username: str = ""
    sub_account_tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    metadata: Mapping[str, str] = field(default_factory=dict)


def _status_name(value: object) -> str:
    raw = str(getattr(value, "value", value) or "ACTIVE").upper()
    return raw.removeprefix("CONNECTION_STATUS_").removeprefix("STATUS_")


def _sub_accounts(value: object) -> dict[str, str]:
    """Pages as {id: token}: accepts a mapping, or a sequence of objects/dicts with id (and access_token)."""
    if not value:
        return {}
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            token = item if isinstance(item, str) else _attr(item, "access_token", "token", "page_token")
            out[str(key)] = str(token or "")
        return out
    result: dict[str, str] = {}
    for item in value:  # type: ignore[attr-defined]
        ident = _attr(item, "id", "account_id", "page_id")
        if ident:
            result[str(ident)] = str(_attr(item, "access_token", "token", "page_token") or "")
    return result


def _attr(obj: object, *names: str) -> Any:
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


def connection_view(obj: object, owner: str, connection_id: str) -> ConnectionView:
    profile = _attr(obj, "profile")
    return ConnectionView(
        id=connection_id,
        owner=str(_attr(obj, "owner") or owner),
        platform=Platform.parse(_attr(obj, "platform")),
        status=_status_name(_attr(obj, "status")),
        account_id=str(_attr(obj, "account_id") or (_attr(profile, "account_id") if profile else "") or ""),
        username=str(_attr(obj, "username") or (_attr(profile, "username") if profile else "") or ""),
        sub_accounts=tuple(_sub_accounts(_attr(obj, "sub_accounts", "pages"))),
    )


def credentials_view(obj: object) -> Credentials:
    return Credentials(
        platform=Platform.parse(_attr(obj, "platform")),
        access_token=str(_attr(obj, "access_token") or ""),
        account_id=str(_attr(obj, "account_id", "platform_account_id") or ""),
        username=str(_attr(obj, "username") or ""),
        sub_account_tokens=_sub_accounts(_attr(obj, "sub_accounts", "page_tokens", "pages")),
        metadata={str(k): str(v) for k, v in dict(_attr(obj, "metadata") or {}).items()},
    )


# ---------------------------------------------------------------- publishing outcomes


class PublishFailure(Exception):
    """A publisher's answer other than success. `reason` is UPPER_SNAKE, `message` never holds a token."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RetryableFailure(PublishFailure):
    """Transient, and nothing irreversible happened (the create call was not sent, or surely not processed)."""

    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(reason, message)
        self.retry_after = retry_after


class RateLimitedFailure(PublishFailure):
    """The platform's rate limit for `scope_key` (app-wide or one account) until `until`."""

    def __init__(self, reason: str, message: str, scope_key: str, until: datetime) -> None:
        super().__init__(reason, message)
        self.scope_key = scope_key
        self.until = until


class RejectedFailure(PublishFailure):
    """The platform refused the content or the request; retrying will not help.

    After the create call was sent, only a refusal with `unpublished=True` (the platform said the post failed, e.g.
    TikTok's FAILED status) may fail the post; any other leaves it UNCONFIRMED.
    """

    def __init__(self, reason: str, message: str, *, unpublished: bool = False) -> None:
        super().__init__(reason, message)
        self.unpublished = unpublished


class ReauthFailure(PublishFailure):
    """The connection's grant is gone (`invalid_grant`, revoked token): a person must authorize again."""


class OutcomeUnknown(PublishFailure):
    """The create call was sent and its outcome is unknown (timeout, reset, 5xx, crash)."""


class LeaseLost(Exception):
    """Another worker owns the post now (our lease expired); stop touching it."""


class Verdict(StrEnum):
    PUBLISHED = "PUBLISHED"  # it is live: `platform_post_id` (and `permalink`) known
    NOT_PUBLISHED = "NOT_PUBLISHED"  # proven absent: publishing again is safe
    PENDING = "PENDING"  # the platform is still processing it: ask again later
    UNKNOWN = "UNKNOWN"  # cannot tell (yet): UNCONFIRMED, asked again after `retry_after` if set


@dataclass(frozen=True, slots=True)
class Published:
    platform_post_id: str
    permalink: str = ""


@dataclass(frozen=True, slots=True)
class Reconciliation:
    verdict: Verdict
    published: Published | None = None
    reason: str = ""
    retry_after: float | None = None
    keep_progress: bool = True  # reuse uploads/containers/sessions when publishing again


class PublishJournal(Protocol):
    """Durable notes a publisher makes while it works; each one is committed before it returns."""

    async def checkpoint(self, **progress: Any) -> None: ...
    async def arm(self) -> None: ...
    async def disarm(self) -> None: ...
    async def created(self, platform_post_id: str, permalink: str = "") -> None: ...


@dataclass(slots=True)
class PublishContext:
    """Everything one publish (or reconcile) of one post may use."""

    post: Post
    credentials: Credentials
    journal: PublishJournal
    refresh: Callable[[], Awaitable[Credentials]]
    report_limit: Callable[[str, datetime, str], Awaitable[None]]
    now: Callable[[], datetime]


class Publisher(Protocol):
    platform: Platform

    async def publish(self, ctx: PublishContext) -> Published: ...
    async def reconcile(self, ctx: PublishContext) -> Reconciliation: ...


class MediaConformer(Protocol):
    """Media as each platform accepts them (the conformance adapter: probe, convert, store renditions)."""

    async def conform(self, post: Post) -> tuple[Media, ...]:
        """The post's media, each either the original (it conforms) or a rendition made for the post's platform.

        Raises PublishFailure: RejectedFailure with a reason code when an item cannot be made acceptable (or the
        conversion failed or timed out), RetryableFailure when fetching the original failed transiently.
        """
        ...

    async def inspect(self, platform: Platform, media: tuple[Media, ...]) -> list[FieldViolation]:
        """At CreatePost: a violation (field `post.media[i]`, the rule) for each item no conversion can fix."""
        ...


def account_limit_key(platform: Platform, account: str) -> str:
    return f"{platform.value}:account:{account}"


def app_limit_key(platform: Platform) -> str:
    return f"{platform.value}:app"


# ---------------------------------------------------------------- storage


@dataclass(frozen=True, slots=True)
class ListQuery:
    owner: str
    limit: int
    state: PostState | None = None
    platform: Platform | None = None
    connection_id: str | None = None
    after: tuple[datetime, str] | None = None


class PostDispatch(Protocol):
    """The posting queue of this replica, for posts it creates itself: a post due now that it has room for is
    inserted already leased to it and starts without waiting for a claim (`contentpipe.common.workqueue`)."""

    def reserve(self) -> Lease | None:
        """The lease to insert a post with when this replica can publish it now (then `start_reserved` or
        `unreserve` follows), else None."""

    def start_reserved(self, post: Post) -> None:
        """Publish `post`, inserted under the lease `reserve` gave with its attempt started (PUBLISHING), as a
        claim hands posts over."""

    def unreserve(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Added:
    """What `PostRepository.add` did: only `created` tells whether this call inserted the row (and may start
    publishing it); the returned post's id says nothing once callers may choose ids."""

    post: Post
    created: bool  # False: the post an earlier create with the same (owner, request_id) made


class PostIdTaken(AlreadyExists):
    """A caller-chosen post id that another create took (not a retry of it). Says nothing about that post: it may
    be another user's."""

    def __init__(self, post_id: str) -> None:
        super().__init__(
            f"post_id {post_id!r} is already taken: choose another id, or leave post_id empty for the service to "
            "choose one",
            reason="POST_ID_TAKEN",
            metadata={"post_id": post_id},
        )


class PostRepository(Protocol):
    async def add(self, post: Post, lease: Lease | None = None) -> Added:
        """Insert (already leased when `lease` is given). A repeated (owner, request_id) answers with that post
        (created=False), whatever its id; an id taken otherwise raises PostIdTaken."""

    async def get(self, post_id: str) -> Post | None: ...
    async def find_by_request(self, owner: str, request_id: str) -> Post | None: ...
    async def page(self, query: ListQuery) -> list[Post]: ...
    async def update_unleased(self, post: Post, expected: PostState) -> bool: ...
    async def queue_stats(self) -> tuple[int, datetime | None]:
        """QUEUED posts and the oldest one's create time (None when none is), for the queue gauges."""
        ...

    async def claim(self, worker_id: str, limit: int, lease_seconds: float) -> list[Post]: ...
    async def save(self, post: Post, worker_id: str, *, release: bool = False) -> bool: ...
    async def renew(self, worker_id: str, ids: Sequence[str], lease_seconds: float) -> set[str]: ...
    async def release(self, worker_id: str, ids: Sequence[str] | None = None) -> None: ...
    async def count_recent(
        self, platform: Platform, account_id: str, since: datetime, exclude: str
    ) -> tuple[int, datetime | None]: ...


class RateLimitStore(Protocol):
    async def block(self, key: str, until: datetime, reason: str) -> None: ...
    async def blocked(self, keys: Sequence[str], now: datetime) -> tuple[str, datetime, str] | None: ...
