"""gRPC servicer for PostingService: translate messages, call one use case, translate the result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contentpipe.api.oauth.v1 import platform_pb2, posting_service_pb2_grpc
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from contentpipe.common.auth import current_principal
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.ids import parse_name
from contentpipe.common.pagination import PageTokenCodec, keyset_after, keyset_token, page_size
from contentpipe.common.request_checks import optional_seconds
from contentpipe.oauth.domain.posts import (
    Media,
    MediaKind,
    Platform,
    Post,
    PostOptions,
    PostState,
)
from contentpipe.oauth.domain.posts_rules import NewPost
from contentpipe.oauth.service_layer.posting import PostingServices, connection_id_from
from contentpipe.oauth.service_layer.posting_ports import ListQuery
from google.protobuf.timestamp_pb2 import Timestamp

_NAME = "posts/{id}"
_STATES = {
    pb.POST_STATE_QUEUED: PostState.QUEUED,
    pb.POST_STATE_PUBLISHING: PostState.PUBLISHING,
    pb.POST_STATE_PUBLISHED: PostState.PUBLISHED,
    pb.POST_STATE_FAILED: PostState.FAILED,
    pb.POST_STATE_CANCELED: PostState.CANCELED,
    pb.POST_STATE_UNCONFIRMED: PostState.UNCONFIRMED,
}
_STATES_PB = {state: value for value, state in _STATES.items()}
_PLATFORMS = {
    platform_pb2.PLATFORM_INSTAGRAM: Platform.INSTAGRAM,
    platform_pb2.PLATFORM_TWITTER: Platform.TWITTER,
    platform_pb2.PLATFORM_LINKEDIN: Platform.LINKEDIN,
    platform_pb2.PLATFORM_TIKTOK: Platform.TIKTOK,
    platform_pb2.PLATFORM_GOOGLE: Platform.GOOGLE,
    platform_pb2.PLATFORM_FACEBOOK: Platform.FACEBOOK,
    platform_pb2.PLATFORM_OUTBOX: Platform.OUTBOX,
}
_PLATFORMS_PB = {platform: value for value, platform in _PLATFORMS.items()}
_KINDS = {pb.MEDIA_KIND_IMAGE: MediaKind.IMAGE, pb.MEDIA_KIND_VIDEO: MediaKind.VIDEO}
_KINDS_PB = {kind: value for value, kind in _KINDS.items()}
ERROR_CLASS_PB = {
    ErrorClass.RETRYABLE: pb.POST_ERROR_CLASS_RETRYABLE,
    ErrorClass.RATE_LIMITED: pb.POST_ERROR_CLASS_RATE_LIMITED,
    ErrorClass.NEEDS_REAUTH: pb.POST_ERROR_CLASS_NEEDS_REAUTH,
    ErrorClass.REJECTED_BY_PLATFORM: pb.POST_ERROR_CLASS_REJECTED_BY_PLATFORM,
    # The post API has no class of its own for a permanent failure: the closest is the one that is not retried
    # either (a caller that reads it must not try the same post again).
    ErrorClass.PERMANENT: pb.POST_ERROR_CLASS_REJECTED_BY_PLATFORM,
}


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def new_post_from(request: pb.CreatePostRequest) -> NewPost:
    p = request.post
    media = []
    for index, item in enumerate(p.media):
        if item.kind not in _KINDS:
            raise InvalidArgument.single(f"post.media[{index}].kind", "IMAGE or VIDEO required")
        media.append(
            Media(
                uri=item.uri,
                kind=_KINDS[item.kind],
                content_type=item.content_type,
                size_bytes=item.size_bytes,
                duration_seconds=item.duration_seconds,
                width=item.width,
                height=item.height,
                sha256=item.sha256,
            )
        )
    o = p.options
    options = PostOptions(
        twitter_reply_to_post_id=o.twitter.reply_to_post_id,
        linkedin_visibility=o.linkedin.visibility,
        instagram_share_to_feed=o.instagram.share_to_feed if o.instagram.HasField("share_to_feed") else None,
        tiktok_privacy_level=o.tiktok.privacy_level,
        tiktok_disable_comment=o.tiktok.disable_comment,
        tiktok_disable_duet=o.tiktok.disable_duet,
        tiktok_disable_stitch=o.tiktok.disable_stitch,
        youtube_title=o.youtube.title,
        youtube_description=o.youtube.description,
        youtube_privacy_status=o.youtube.privacy_status,
        youtube_tags=tuple(o.youtube.tags),
        youtube_category_id=o.youtube.category_id,
        youtube_made_for_kids=o.youtube.made_for_kids,
        facebook_page_id=o.facebook.page_id,
        ai_generated=p.ai_generated,
    )
    publish_time = None
    if p.HasField("publish_time"):
        try:
            publish_time = p.publish_time.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise InvalidArgument.single("post.publish_time", "not a valid timestamp") from None
    return NewPost(
        connection_id=connection_id_from(p.connection),
        text=p.text,
        media=tuple(media),
        options=options,
        publish_time=publish_time,
        request_id=request.request_id,
        post_id=request.post_id,
    )


def post_to_pb(post: Post) -> pb.Post:
    o = post.options
    options = pb.PlatformOptions(
        twitter=pb.TwitterOptions(reply_to_post_id=o.twitter_reply_to_post_id),
        linkedin=pb.LinkedInOptions(visibility=o.linkedin_visibility),
        instagram=pb.InstagramOptions(share_to_feed=o.instagram_share_to_feed)
        if o.instagram_share_to_feed is not None
        else pb.InstagramOptions(),
        tiktok=pb.TikTokOptions(
            privacy_level=o.tiktok_privacy_level,
            disable_comment=o.tiktok_disable_comment,
            disable_duet=o.tiktok_disable_duet,
            disable_stitch=o.tiktok_disable_stitch,
        ),
        youtube=pb.YouTubeOptions(
            title=o.youtube_title,
            description=o.youtube_description,
            privacy_status=o.youtube_privacy_status,
            tags=list(o.youtube_tags),
            category_id=o.youtube_category_id,
            made_for_kids=o.youtube_made_for_kids,
        ),
        facebook=pb.FacebookOptions(page_id=o.facebook_page_id),
    )
    message = pb.Post(
        name=post.name,
        owner=post.owner,
        connection=post.connection,
        platform=_PLATFORMS_PB[post.platform],
        text=post.text,
        media=[
            pb.Media(
                uri=m.uri,
                kind=_KINDS_PB[m.kind],
                content_type=m.content_type,
                size_bytes=m.size_bytes,
                duration_seconds=m.duration_seconds,
                width=m.width,
                height=m.height,
                sha256=m.sha256,
            )
            for m in post.media
        ],
        options=options,
        publish_time=_ts(post.publish_time),
        state=_STATES_PB[post.state],
        platform_post_id=post.platform_post_id,
        permalink=post.permalink,
        attempts=post.attempts,
        create_time=_ts(post.create_time),
        update_time=_ts(post.update_time or post.create_time),
        published_time=_ts(post.published_time),
        request_id=post.request_id,
        ai_generated=post.options.ai_generated,
        next_attempt_time=_ts(
            post.next_attempt_time if post.state is PostState.QUEUED or post.state is PostState.UNCONFIRMED else None
        ),
    )
    if post.last_error is not None:
        e = post.last_error
        message.last_error.CopyFrom(
            pb.PostError(
                error_class=ERROR_CLASS_PB[e.error_class], reason=e.reason, message=e.message, time=_ts(e.time)
            )
        )
    return message


class PostingServiceServicer(posting_service_pb2_grpc.PostingServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

    def __init__(self, services: PostingServices, page_tokens: PageTokenCodec) -> None:
        self._services = services
        self._tokens = page_tokens

    async def CreatePost(self, request: pb.CreatePostRequest, context: Any) -> pb.CreatePostResponse:
        owner = current_principal().user_id
        post = await self._services.create(owner, new_post_from(request), validate_only=request.validate_only)
        return pb.CreatePostResponse(post=post_to_pb(post))

    async def GetPost(self, request: pb.GetPostRequest, context: Any) -> pb.GetPostResponse:
        owner = current_principal().user_id
        post = await self._services.get(owner, parse_name(_NAME, request.name))
        return pb.GetPostResponse(post=post_to_pb(post))

    async def WaitPost(self, request: pb.WaitPostRequest, context: Any) -> pb.WaitPostResponse:
        owner = current_principal().user_id
        post_id = parse_name(_NAME, request.name)
        if request.state and request.state not in _STATES:
            raise InvalidArgument.single("state", f"unknown state {request.state}")
        max_wait = optional_seconds(request, "timeout")
        post = await self._services.wait(owner, post_id, seen=_STATES.get(request.state), max_wait=max_wait)
        return pb.WaitPostResponse(post=post_to_pb(post))

    async def ListPosts(self, request: pb.ListPostsRequest, context: Any) -> pb.ListPostsResponse:
        owner = current_principal().user_id
        limit = page_size(request.page_size)
        if request.state and request.state not in _STATES:
            raise InvalidArgument.single("state", f"unknown state {request.state}")
        if request.platform and request.platform not in _PLATFORMS:
            raise InvalidArgument.single("platform", f"unknown platform {request.platform}")
        connection = connection_id_from(request.connection, "connection") if request.connection else None
        query = f"{owner}|{request.state}|{request.platform}|{connection or ''}"
        after = keyset_after(self._tokens, request.page_token, query=query)
        items, more = await self._services.list_page(
            ListQuery(
                owner=owner,
                limit=limit,
                state=_STATES.get(request.state),
                platform=_PLATFORMS.get(request.platform),
                connection_id=connection,
                after=after,
            )
        )
        token = ""
        if more and items:
            last = items[-1]
            token = keyset_token(self._tokens, last.create_time, last.id, query=query)
        return pb.ListPostsResponse(posts=[post_to_pb(p) for p in items], next_page_token=token)

    async def CancelPost(self, request: pb.CancelPostRequest, context: Any) -> pb.CancelPostResponse:
        owner = current_principal().user_id
        post = await self._services.cancel(owner, parse_name(_NAME, request.name))
        return pb.CancelPostResponse(post=post_to_pb(post))

    async def ResolvePost(self, request: pb.ResolvePostRequest, context: Any) -> pb.ResolvePostResponse:
        owner = current_principal().user_id
        post = await self._services.resolve(
            owner,
            parse_name(_NAME, request.name),
            published=request.published,
            platform_post_id=request.platform_post_id,
            permalink=request.permalink,
        )
        return pb.ResolvePostResponse(post=post_to_pb(post))
