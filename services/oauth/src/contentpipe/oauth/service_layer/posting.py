"""Use cases of PostingService: create (validate and queue), get, list, cancel, resolve. One method per RPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from contentpipe.common.changes import ChangeNotifier, wait_for, wait_seconds
from contentpipe.common.errors import (
    ContentpipeError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from contentpipe.common.ids import is_id, new_id
from contentpipe.common.telemetry import inject_context
from contentpipe.common.workqueue import Lease, add_and_start
from contentpipe.oauth.domain.media_specs import SpecTable
from contentpipe.oauth.domain.posts import Media, Platform, Post, PostState, utcnow
from contentpipe.oauth.domain.posts_rules import NewPost, validate_post
from contentpipe.oauth.service_layer.metrics import default_metrics
from contentpipe.oauth.service_layer.posting_ports import (
    ConnectionView,
    ListQuery,
    PostDispatch,
    PostIdTaken,
    PostRepository,
    connection_view,
)
from contentpipe.oauth.service_layer.tokens import TokenProvider

# (uri, field, owner) -> raises InvalidArgument(field); a file:// item must be one of `owner`'s stored outputs
UrlCheck = Callable[[str, str, str], Awaitable[None]]
# (platform, media) -> a violation per item that no conversion can make acceptable (MediaConformer.inspect)
MediaInspect = Callable[[Platform, tuple[Media, ...]], Awaitable[list[FieldViolation]]]


def connection_id_from(name: str, field: str = "post.connection") -> str:
    prefix = "connections/"
    if not name:
        raise InvalidArgument.single(field, "required: connections/{connection_id}")
    if not name.startswith(prefix) or "/" in name[len(prefix) :] or len(name) == len(prefix):
        raise InvalidArgument.single(field, f"expected connections/{{connection_id}}, got {name!r}")
    return name[len(prefix) :]


def _check_post_id(post_id: str) -> None:
    """A caller-chosen post id has the form of the ids the service makes (empty: the service chooses)."""
    if post_id and not is_id(post_id):
        raise InvalidArgument.single(
            "post_id", "expected 32 lowercase hex characters, or empty for the service to choose"
        )


@dataclass(slots=True)
class PostingServices:
    repository: PostRepository
    tokens: TokenProvider
    media_check: UrlCheck
    media_inspect: MediaInspect | None = None
    media_specs: SpecTable | None = None  # the media spec table with configured overrides (None: as shipped)
    wake_worker: Callable[[], None] = lambda: None
    dispatch: PostDispatch | None = None
    clock: Callable[[], datetime] = utcnow
    # Told about every committed state change (NotifyingPostRepository), so `wait` wakes at once.
    changes: ChangeNotifier = field(default_factory=ChangeNotifier)

    async def connection(self, owner: str, connection_id: str) -> ConnectionView:
        """The caller's connection; another user's (or a missing) one is NOT_FOUND."""
        try:
            found = await self.tokens.get_connection(owner, connection_id)
        except NotFound:
            found = None
        view = connection_view(found, owner, connection_id) if found is not None else None
        if view is None or view.owner != owner:
            raise NotFound(f"connections/{connection_id} not found", reason="CONNECTION_NOT_FOUND")
        return view

    async def create(self, owner: str, request: NewPost, *, validate_only: bool = False) -> Post:
        # Before anything else: a malformed id is wrong in any state, and no earlier create can have taken it.
        _check_post_id(request.post_id)
        if validate_only:
            post = await self._new_post(owner, request)
            await self._check_post_id_free(owner, request)
            post.id = ""  # AIP-163: what would be created; no name a client could look up
            return post
        try:
            post = await self._new_post(owner, request)
        except ContentpipeError:
            # A retry of a create that went through gets that post, whatever the connection or the checks say now
            # (disconnected, awaiting re-authorization, media gone). Looked up only here: a create that passes is
            # one INSERT, and `add` answers a repeated request_id with the post it made.
            existing = await self.repository.find_by_request(owner, request.request_id) if request.request_id else None
            if existing is None:
                raise
            return existing
        # Due now and room here to publish it: inserted leased to this replica and started at once (no wake-up,
        # no claim). A scheduled post waits in the queue for its time.
        due = post.next_attempt_time is None or post.next_attempt_time <= post.create_time

        async def add(lease: Lease | None) -> tuple[Post, bool]:
            if lease is not None:
                # Inserted with its first attempt started, as a claim would start it: no save before publishing.
                post.start_attempt(post.create_time)
            # `created`, not a comparison of ids: with ids chosen by the caller, a retried create has the id of the
            # post it made, which may be publishing already; starting it again could publish it twice.
            added = await self.repository.add(post, lease)
            return added.post, added.created

        return await add_and_start(self.dispatch if due else None, add, self.wake_worker)

    async def _check_post_id_free(self, owner: str, request: NewPost) -> None:
        """For validate_only: the ALREADY_EXISTS the create itself would answer (see `PostRepository.add`)."""
        if not request.post_id or await self.repository.get(request.post_id) is None:
            return
        if request.request_id and await self.repository.find_by_request(owner, request.request_id) is not None:
            return  # the create would answer with the post that request made
        raise PostIdTaken(request.post_id)

    async def _new_post(self, owner: str, request: NewPost) -> Post:
        """The post `request` makes, checked against its connection, the platform's rules and its media."""
        conn = await self.connection(owner, request.connection_id)
        # The post's own rules first (INVALID_ARGUMENT whatever the connection's state): a pipeline checked while
        # its connection awaits re-authorization still learns that, say, its YouTube title is missing.
        validate_post(
            request,
            conn.platform,
            sub_accounts=conn.sub_accounts if conn.platform is Platform.FACEBOOK else None,
            specs=self.media_specs,
        )
        if conn.unusable:
            raise FailedPrecondition(
                f"{conn.name} is {conn.status}: authorize it again before posting through it",
                reason="CONNECTION_NEEDS_REAUTH",
                metadata={"connection": conn.name, "status": conn.status},
            )
        for index, item in enumerate(request.media):
            await self.media_check(item.uri, f"post.media[{index}].uri", owner)
        if self.media_inspect is not None and request.media:
            # Probed now (a bounded read): media no conversion can fix never wait in the queue to fail there.
            found = await self.media_inspect(conn.platform, request.media)
            if found:
                raise InvalidArgument(f"{found[0].field}: {found[0].description}", found, reason="MEDIA_NOT_ACCEPTED")
        now = self.clock()
        account = conn.account_id or conn.id
        if conn.platform is Platform.FACEBOOK:
            account = request.options.facebook_page_id
        return Post(
            id=request.post_id or new_id(),
            owner=owner,
            connection_id=conn.id,
            platform=conn.platform,
            text=request.text,
            media=request.media,
            options=request.options,
            create_time=now,
            publish_time=request.publish_time,
            request_id=request.request_id,
            trace_context=inject_context(),
            account_id=account,
            update_time=now,
            next_attempt_time=max(now, request.publish_time) if request.publish_time else now,
        )

    async def get(self, owner: str, post_id: str) -> Post:
        # A final state just written here is known without a query (a caller's wait right after the post finished).
        post = self.changes.final(post_id, Post) or await self.repository.get(post_id)
        if post is None or post.owner != owner:
            raise NotFound(f"posts/{post_id} not found", reason="POST_NOT_FOUND")
        return post

    async def wait(self, owner: str, post_id: str, *, seen: PostState | None, max_wait: float | None) -> Post:
        """The post once its state is not `seen` (None: once terminal or UNCONFIRMED), or as it is after
        `max_wait` seconds (capped, see contentpipe.common.changes)."""

        def done(post: Post) -> bool:
            if seen is None:
                return post.state.terminal or post.state is PostState.UNCONFIRMED
            return post.state != seen

        return await wait_for(
            self.changes,
            post_id,
            lambda: self.get(owner, post_id),
            done,
            wait_seconds(max_wait),
            visible=lambda post: post.owner == owner,  # what `get` checks of a row
        )

    async def list_page(self, query: ListQuery) -> tuple[list[Post], bool]:
        wanted = query.limit
        rows = await self.repository.page(
            ListQuery(
                owner=query.owner,
                limit=wanted + 1,
                state=query.state,
                platform=query.platform,
                connection_id=query.connection_id,
                after=query.after,
            )
        )
        return rows[:wanted], len(rows) > wanted

    async def cancel(self, owner: str, post_id: str) -> Post:
        post = await self.get(owner, post_id)
        if post.state is PostState.CANCELED:
            return post
        if post.state is not PostState.QUEUED:
            raise FailedPrecondition(
                f"{post.name} is {post.state.value}; only a QUEUED post can be cancelled", reason="POST_NOT_QUEUED"
            )
        post.cancel(self.clock())
        if not await self.repository.update_unleased(post, PostState.QUEUED):
            raise FailedPrecondition(
                f"{post.name} is being published; it can no longer be cancelled", reason="POST_NOT_QUEUED"
            )
        default_metrics().post_finished(post.platform.value, post.state.value)
        return post

    async def resolve(
        self, owner: str, post_id: str, *, published: bool, platform_post_id: str, permalink: str
    ) -> Post:
        post = await self.get(owner, post_id)
        if post.state is not PostState.UNCONFIRMED:
            raise FailedPrecondition(
                f"{post.name} is {post.state.value}; only an UNCONFIRMED post can be resolved",
                reason="POST_NOT_UNCONFIRMED",
            )
        if published and not platform_post_id:
            raise InvalidArgument.single("platform_post_id", "required when published is true")
        try:
            scheme = urlsplit(permalink).scheme if permalink else "https"
        except ValueError:
            scheme = ""
        if scheme not in ("http", "https", "file"):
            raise InvalidArgument.single("permalink", "must be an http(s) or file:// URL")
        post.resolve(published=published, platform_post_id=platform_post_id, permalink=permalink, now=self.clock())
        if not await self.repository.update_unleased(post, PostState.UNCONFIRMED):
            raise FailedPrecondition(f"{post.name} changed meanwhile; read it again", reason="POST_CHANGED")
        if not published:
            self.wake_worker()
        return post


__all__ = ["ContentpipeError", "PostingServices", "connection_id_from"]
