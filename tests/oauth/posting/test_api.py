"""PostingService over gRPC: validation with field violations, ownership, idempotency, chosen ids, cancel, list,
resolve."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from contentpipe.common.ids import is_id, new_id
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fakes.publishing_tokens import FakeConnection, FakeTokens
from tests.oauth.posting.harness import Stack, posting_stack, statements_on_posts
from tests.support import bearer

pytestmark = pytest.mark.integration


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    out: dict[str, str] = {}
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.update({v.field: v.description for v in bad.field_violations})
    return out


def reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def tokens_for_all() -> FakeTokens:
    tokens = FakeTokens()
    for platform in ("twitter", "linkedin", "instagram", "tiktok", "google", "facebook", "outbox"):
        tokens.add(
            FakeConnection(
                id=platform,
                owner="user-1",
                platform=platform,
                account_id="42",
                token="t",
                pages={"42": "p"} if platform == "facebook" else {},
            )
        )
    tokens.add(
        FakeConnection(id="dead", owner="user-1", platform="twitter", account_id="9", token="t", status="needs_reauth")
    )
    tokens.add(
        FakeConnection(id="revoked", owner="user-1", platform="linkedin", account_id="9", token="t", status="revoked")
    )
    tokens.add(FakeConnection(id="other", owner="user-2", platform="outbox", account_id="user-2", token=""))
    return tokens


async def refused(stack: Stack, code: grpc.StatusCode, user: str = "user-1", **post: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stack.create(user=user, **post)
    assert info.value.code() == code, info.value.details()
    return info.value


@pytest.mark.parametrize(
    ("platform", "limit"),
    [
        ("twitter", 280),
        ("linkedin", 3000),
        ("instagram", 2200),
        ("tiktok", 4000),  # a photo post's description (a video's title: 2,200)
        ("facebook", 63206),
        ("outbox", 100_000),
    ],
)
async def test_text_over_the_platform_limit_is_invalid_argument_naming_post_text(
    platform: str, limit: int, database_url: str, tmp_path: Path
) -> None:
    options = pb.PlatformOptions(
        tiktok=pb.TikTokOptions(privacy_level="SELF_ONLY"), facebook=pb.FacebookOptions(page_id="42")
    )
    media = [pb.Media(uri="https://cdn.example.com/a.jpg", kind=pb.MEDIA_KIND_IMAGE)]
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        err = await refused(
            stack,
            grpc.StatusCode.INVALID_ARGUMENT,
            connection=f"connections/{platform}",
            text="x" * (limit + 1),
            options=options,
            media=media if platform in ("instagram", "tiktok") else [],
        )
        assert "post.text" in violations(err), violations(err)
        assert str(limit) in violations(err)["post.text"]
        valid = pb.Post(
            connection=f"connections/{platform}",
            text="x" * limit,
            options=options,
            media=media if platform in ("instagram", "tiktok") else [],
        )
        ok = await stack.stub.CreatePost(pb.CreatePostRequest(post=valid, validate_only=True), metadata=bearer())
        assert ok.post.state == pb.POST_STATE_QUEUED


async def test_platform_rules_are_field_violations(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        clip = pb.Media(
            uri="https://cdn.example.com/a.mp4",
            kind=pb.MEDIA_KIND_VIDEO,
            duration_seconds=200,
            size_bytes=600 * 1024 * 1024,
        )
        err = await refused(
            stack, grpc.StatusCode.INVALID_ARGUMENT, connection="connections/twitter", text="t", media=[clip, clip]
        )
        found = violations(err)
        assert {"post.media", "post.media[0].size_bytes", "post.media[0].duration_seconds"} <= set(found), found
        err = await refused(
            stack,
            grpc.StatusCode.INVALID_ARGUMENT,
            connection="connections/tiktok",
            text="t",
            media=[pb.Media(uri="https://cdn.example.com/a.mp4", kind=pb.MEDIA_KIND_VIDEO)],
        )
        assert "post.options.tiktok.privacy_level" in violations(err)
        err = await refused(
            stack,
            grpc.StatusCode.INVALID_ARGUMENT,
            connection="connections/google",
            text="t",
            media=[pb.Media(uri="https://cdn.example.com/a.mp4", kind=pb.MEDIA_KIND_VIDEO)],
        )
        assert "post.options.youtube.title" in violations(err)
        err = await refused(stack, grpc.StatusCode.INVALID_ARGUMENT, connection="connections/facebook", text="t")
        assert "post.options.facebook.page_id" in violations(err)
        err = await refused(
            stack,
            grpc.StatusCode.INVALID_ARGUMENT,
            connection="connections/facebook",
            text="t",
            options=pb.PlatformOptions(facebook=pb.FacebookOptions(page_id="not-mine")),
        )
        assert "not one of this connection's Pages" in violations(err)["post.options.facebook.page_id"]
        err = await refused(stack, grpc.StatusCode.INVALID_ARGUMENT, connection="connections/instagram", text="t")
        assert "post.media" in violations(err)
        err = await refused(
            stack,
            grpc.StatusCode.INVALID_ARGUMENT,
            connection="connections/instagram",
            text="t",
            media=[pb.Media(uri="file:///etc/hosts", kind=pb.MEDIA_KIND_IMAGE)],
        )
        assert "post.media[0].uri" in violations(err)
        err = await refused(
            stack,
            grpc.StatusCode.INVALID_ARGUMENT,
            connection="connections/outbox",
            text="t",
            media=[pb.Media(uri="file:///etc/passwd", kind=pb.MEDIA_KIND_IMAGE)],
        )
        assert "post.media[0].uri" in violations(err)
        err = await refused(
            stack,
            grpc.StatusCode.INVALID_ARGUMENT,
            connection="connections/outbox",
            text="t",
            media=[pb.Media(uri="https://x.test/a.png")],
        )
        assert "post.media[0].kind" in violations(err)
        for bad_url in ("http://[not-an-ip]/a.png", "https://host:99999/a.png"):
            err = await refused(
                stack,
                grpc.StatusCode.INVALID_ARGUMENT,
                connection="connections/outbox",
                text="t",
                media=[pb.Media(uri=bad_url, kind=pb.MEDIA_KIND_IMAGE)],
            )
            assert "post.media[0].uri" in violations(err)
        err = await refused(
            stack,
            grpc.StatusCode.INVALID_ARGUMENT,
            connection="connections/outbox",
            text="t",
            publish_time=Timestamp(seconds=-(2**63)),
        )
        assert "post.publish_time" in violations(err)
        err = await refused(stack, grpc.StatusCode.INVALID_ARGUMENT, connection="bad-name", text="t")
        assert "post.connection" in violations(err)


async def test_unusable_or_foreign_connections(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        for name in ("connections/dead", "connections/revoked"):
            err = await refused(stack, grpc.StatusCode.FAILED_PRECONDITION, connection=name, text="t")
            assert name in (err.details() or "") and reason(err) == "CONNECTION_NEEDS_REAUTH"
        err = await refused(stack, grpc.StatusCode.NOT_FOUND, connection="connections/other", text="t")
        assert reason(err) == "CONNECTION_NOT_FOUND"
        # What is wrong with the post itself is said whatever the connection's state (a pipeline's dry run relies
        # on it: a connection awaiting re-authorization must not hide a bad option).
        bad_reply = pb.PlatformOptions(twitter=pb.TwitterOptions(reply_to_post_id="abc"))
        err = await refused(
            stack, grpc.StatusCode.INVALID_ARGUMENT, connection="connections/dead", text="t", options=bad_reply
        )
        assert "post.options.twitter.reply_to_post_id" in violations(err)


async def test_another_users_post_is_not_found(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        post = await stack.create(connection="connections/outbox", text="mine")
        for call in (
            stack.stub.GetPost(pb.GetPostRequest(name=post.name), metadata=bearer("user-2")),
            stack.stub.CancelPost(pb.CancelPostRequest(name=post.name), metadata=bearer("user-2")),
            stack.stub.ResolvePost(pb.ResolvePostRequest(name=post.name), metadata=bearer("user-2")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await stack.stub.ListPosts(pb.ListPostsRequest(), metadata=bearer("user-2"))
        assert list(listed.posts) == []


async def test_request_id_makes_create_idempotent(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        first = await stack.create(connection="connections/outbox", text="once", request_id="req-1")
        again = await stack.create(connection="connections/outbox", text="once", request_id="req-1")
        other_user = await stack.create(user="user-2", connection="connections/other", text="once", request_id="req-1")
        assert again.name == first.name and again.request_id == "req-1"
        assert other_user.name != first.name
        listed = await stack.stub.ListPosts(pb.ListPostsRequest(), metadata=bearer())
        assert [p.name for p in listed.posts] == [first.name]


async def test_a_create_is_one_insert(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        with statements_on_posts(stack.engine) as sent:
            await stack.create(connection="connections/outbox", text="once", request_id="req-1")
            assert sent == ["INSERT"]  # no read of the request_id before it
            sent.clear()
            await stack.create(connection="connections/outbox", text="once", request_id="req-1")
            assert sent == ["INSERT", "SELECT"]  # the conflict, then the post it made


async def test_a_retried_create_gets_its_post_whatever_changed_since(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        first = await stack.create(connection="connections/twitter", text="once", request_id="req-1")
        bad_reply = pb.PlatformOptions(twitter=pb.TwitterOptions(reply_to_post_id="abc"))
        # The same request again, now refused by the rules; then its connection awaiting re-authorization; then gone.
        again = await stack.create(connection="connections/twitter", text="once", request_id="req-1", options=bad_reply)
        assert again.name == first.name
        stack.tokens.connections["twitter"].status = "needs_reauth"
        again = await stack.create(connection="connections/twitter", text="once", request_id="req-1")
        assert again.name == first.name
        del stack.tokens.connections["twitter"]
        again = await stack.create(connection="connections/twitter", text="once", request_id="req-1")
        assert again.name == first.name and again.state == pb.POST_STATE_QUEUED
        # Another request id is refused as before, and so is a dry run of the retried one: it creates nothing.
        err = await refused(
            stack, grpc.StatusCode.NOT_FOUND, connection="connections/twitter", text="t", request_id="req-2"
        )
        assert reason(err) == "CONNECTION_NOT_FOUND"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.stub.CreatePost(
                pb.CreatePostRequest(
                    post=pb.Post(connection="connections/twitter", text="once"), request_id="req-1", validate_only=True
                ),
                metadata=bearer(),
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await stack.stub.ListPosts(pb.ListPostsRequest(), metadata=bearer())
        assert [p.name for p in listed.posts] == [first.name]


async def listed_names(stack: Stack, user: str = "user-1") -> list[str]:
    return [p.name for p in (await stack.stub.ListPosts(pb.ListPostsRequest(), metadata=bearer(user))).posts]


async def test_a_chosen_post_id_names_the_post(database_url: str, tmp_path: Path) -> None:
    chosen = new_id()
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        created = await stack.create(connection="connections/outbox", text="named", post_id=chosen)
        assert created.name == f"posts/{chosen}"
        assert (await stack.get(f"posts/{chosen}")).text == "named"
        chosen_by_service = await stack.create(connection="connections/outbox", text="unnamed")
        assert is_id(chosen_by_service.name.removeprefix("posts/")) and chosen_by_service.name != created.name


async def test_a_retried_create_with_a_chosen_id_returns_its_post(database_url: str, tmp_path: Path) -> None:
    chosen = new_id()
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        first = await stack.create(connection="connections/outbox", text="once", post_id=chosen, request_id="req-1")
        again = await stack.create(connection="connections/outbox", text="once", post_id=chosen, request_id="req-1")
        assert (again.name, again.create_time, again.request_id) == (first.name, first.create_time, "req-1")
        # The request id wins over another chosen id: the retry gets the post its first attempt made.
        other_id = await stack.create(
            connection="connections/outbox", text="once", post_id=new_id(), request_id="req-1"
        )
        assert other_id.name == first.name
        assert await listed_names(stack) == [first.name]


async def test_a_taken_post_id_is_already_exists_and_says_nothing_of_the_post_holding_it(
    database_url: str, tmp_path: Path
) -> None:
    chosen = new_id()
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        first = await stack.create(
            connection="connections/twitter", text="a private draft", post_id=chosen, request_id="req-1"
        )
        answers = []
        for request_id in ("req-2", ""):  # the owner's own other create, with or without a request id
            err = await refused(
                stack,
                grpc.StatusCode.ALREADY_EXISTS,
                connection="connections/outbox",
                text="t",
                post_id=chosen,
                request_id=request_id,
            )
            assert reason(err) == "POST_ID_TAKEN" and chosen in (err.details() or "")
            answers.append(err)
        # Another user (even with the same request id) gets the same answer, word for word, and nothing of the post.
        theirs = await refused(
            stack,
            grpc.StatusCode.ALREADY_EXISTS,
            user="user-2",
            connection="connections/other",
            text="t",
            post_id=chosen,
            request_id="req-1",
        )
        assert reason(theirs) == "POST_ID_TAKEN" and theirs.details() == answers[0].details()
        everything = str(rpc_status.from_call(theirs))  # type: ignore[arg-type]
        for secret in ("user-1", "a private draft", "twitter"):
            assert secret not in everything, everything
        assert await listed_names(stack) == [first.name] and await listed_names(stack, "user-2") == []
        assert (await stack.get(first.name)).text == "a private draft"


async def test_a_malformed_post_id_is_invalid_argument_naming_post_id(database_url: str, tmp_path: Path) -> None:
    malformed = ["A" * 32, new_id()[:31], new_id() + "0", f"posts/{new_id()}", "g" * 32, "my-post"]
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        for post_id in malformed:
            for validate_only in (False, True):
                err = await refused(
                    stack,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    connection="connections/outbox",
                    text="t",
                    post_id=post_id,
                    validate_only=validate_only,
                )
                assert "32 lowercase hex" in violations(err)["post_id"], violations(err)
        # Wrong in any state: said before the connection is looked up, and a retried create's request id is no
        # excuse (no create could have taken such an id).
        await stack.create(connection="connections/outbox", text="t", request_id="req-1")
        for connection in ("connections/missing", "connections/outbox"):
            err = await refused(
                stack,
                grpc.StatusCode.INVALID_ARGUMENT,
                connection=connection,
                text="t",
                post_id="x",
                request_id="req-1",
            )
            assert set(violations(err)) == {"post_id"}
        assert len(await listed_names(stack)) == 1


async def test_validate_only_with_a_post_id_checks_it_and_creates_nothing(database_url: str, tmp_path: Path) -> None:
    chosen = new_id()
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        dry = await stack.create(
            connection="connections/outbox", text="t", post_id=chosen, request_id="req-1", validate_only=True
        )
        assert dry.name == "" and dry.state == pb.POST_STATE_QUEUED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.get(f"posts/{chosen}")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert await listed_names(stack) == []
        first = await stack.create(connection="connections/outbox", text="t", post_id=chosen, request_id="req-1")
        # Now taken: a dry run of another create answers as that create would; a dry run of the retry does not.
        err = await refused(
            stack,
            grpc.StatusCode.ALREADY_EXISTS,
            connection="connections/outbox",
            text="t",
            post_id=chosen,
            request_id="req-2",
            validate_only=True,
        )
        assert reason(err) == "POST_ID_TAKEN"
        retry = await stack.create(
            connection="connections/outbox", text="t", post_id=chosen, request_id="req-1", validate_only=True
        )
        assert retry.name == ""
        assert await listed_names(stack) == [first.name]


async def test_cancel_list_and_resolve(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        later = Timestamp()
        later.FromSeconds(4_000_000_000)
        names = [
            (await stack.create(connection="connections/outbox", text=f"p{n}", publish_time=later)).name
            for n in range(5)
        ]
        x_post = await stack.create(connection="connections/twitter", text="x post")
        canceled = await stack.stub.CancelPost(pb.CancelPostRequest(name=names[0]), metadata=bearer())
        assert canceled.post.state == pb.POST_STATE_CANCELED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.stub.ResolvePost(
                pb.ResolvePostRequest(name=names[1], published=True, platform_post_id="1"), metadata=bearer()
            )
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        pages, token = [], ""
        while True:
            page = await stack.stub.ListPosts(pb.ListPostsRequest(page_size=2, page_token=token), metadata=bearer())
            pages.append([p.name for p in page.posts])
            token = page.next_page_token
            if not token:
                break
        assert [n for p in pages for n in p] == [x_post.name, *reversed(names)]
        assert all(len(p) <= 2 for p in pages)
        queued = await stack.stub.ListPosts(
            pb.ListPostsRequest(state=pb.POST_STATE_QUEUED, platform=platform_pb2.PLATFORM_OUTBOX), metadata=bearer()
        )
        assert [p.name for p in queued.posts] == list(reversed(names[1:]))
        by_connection = await stack.stub.ListPosts(
            pb.ListPostsRequest(connection="connections/twitter"), metadata=bearer()
        )
        assert [p.name for p in by_connection.posts] == [x_post.name]
        assert queued.posts[0].next_attempt_time.seconds == 4_000_000_000
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.stub.ListPosts(pb.ListPostsRequest(page_token="forged"), metadata=bearer())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_file_media_must_be_the_callers_own_stored_output(
    database_url: str, tmp_path: Path, media_files: tuple[Path, Path]
) -> None:
    storage = tmp_path / "data" / "generated-content"
    mine, theirs = storage / "user-1" / "generation-1" / "frame.png", storage / "user-2" / "generation-2" / "frame.png"
    for path in (mine, theirs):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(media_files[1], path)
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:

        def post(path: Path) -> pb.Post:
            media = [pb.Media(uri=path.as_uri(), kind=pb.MEDIA_KIND_IMAGE, content_type="image/png")]
            return pb.Post(connection="connections/outbox", text="t", media=media)

        ok = await stack.stub.CreatePost(pb.CreatePostRequest(post=post(mine), validate_only=True), metadata=bearer())
        assert ok.post.media[0].uri == mine.as_uri() and ok.post.name == ""  # validated, not created
        # Another user's generated file, by its path: refused exactly like a file that does not exist.
        answers = []
        for path in (theirs, storage / "user-1" / "generation-1" / "missing.png"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stack.stub.CreatePost(pb.CreatePostRequest(post=post(path)), metadata=bearer())
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            answers.append(violations(info.value)["post.media[0].uri"])
        assert answers[0] == answers[1] and "your own outputs" in answers[0]
