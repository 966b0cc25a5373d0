"""`contentpipe generations ...`, `posts ...` and `notifications ...`: the resources pipelines create."""

from __future__ import annotations

import argparse
import asyncio
import mimetypes
import sys

from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.scheduler.v1 import notification_service_pb2 as note_pb
from contentpipe.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from contentpipe.cli.manifests import parse_message, read_document
from contentpipe.cli.output import age_col, col, print_list, print_resource, print_still_going
from contentpipe.cli.parsing import SubParsers, add_command, add_group, add_paging, resource_name
from contentpipe.cli.platforms import PLATFORM_CHOICES, parse_platform
from contentpipe.cli.references import resolve_name
from contentpipe.cli.session import Session
from contentpipe.common.ids import new_id

GENERATION_COLUMNS = [
    col("NAME", "name"),
    col("KIND", "kind", enum_prefix="GENERATION_KIND_"),
    col("STATE", "state", enum_prefix="GENERATION_STATE_"),
    col("PROVIDER", "provider"),
    col("PROMPT", "prompt"),
    age_col("AGE", "create_time"),
]
POST_COLUMNS = [
    col("NAME", "name"),
    col("PLATFORM", "platform", enum_prefix="PLATFORM_"),
    col("STATE", "state", enum_prefix="POST_STATE_"),
    col("ATTEMPTS", "attempts"),
    col("PERMALINK", "permalink"),
    col("ERROR", "last_error.reason"),
]
NOTIFICATION_COLUMNS = [
    col("NAME", "name"),
    col("KIND", "kind", enum_prefix="NOTIFICATION_KIND_"),
    col("TITLE", "title"),
    age_col("AGE", "create_time"),
    age_col("READ", "acknowledge_time"),
]
_GEN_TERMINAL = {gen_pb.GENERATION_STATE_SUCCEEDED, gen_pb.GENERATION_STATE_FAILED, gen_pb.GENERATION_STATE_CANCELED}


def register(sub: SubParsers) -> None:
    _register_generations(sub)
    _register_posts(sub)
    _register_notifications(sub)


def _register_generations(sub: SubParsers) -> None:
    group = add_group(
        sub,
        "generations",
        help="generate videos, images and text; list and cancel generations",
        examples=['contentpipe generations create --kind video --prompt "a sunrise" --width 320 --height 240 --wait'],
    )
    create = add_command(
        group,
        "create",
        help="queue a generation (with --wait: until it ends)",
        handler=create_generation,
        reads=True,
        examples=[
            'contentpipe generations create --kind video --prompt "a calm sea" --duration 2 --width 320 --height 240',
            'contentpipe generations create --kind text --prompt "a caption about the sea" --wait',
            "contentpipe generations create -f generation.yaml",
        ],
    )
    create.add_argument("-f", "--file", help="YAML or JSON with the fields of contentpipe.api.generation.v1.Generation")
    create.add_argument("--kind", choices=("video", "image", "text"))
    create.add_argument("--prompt")
    create.add_argument("--provider", default="", help="local, replicate or cog (default: the service's)")
    create.add_argument("--model", default="")
    create.add_argument("--width", type=int, default=0)
    create.add_argument("--height", type=int, default=0)
    create.add_argument("--duration", type=float, default=0.0, help="video length in seconds")
    create.add_argument("--fps", type=int, default=0)
    create.add_argument("--seed", type=int)
    create.add_argument("--wait", action="store_true", help="poll until it ends")

    listing = add_command(
        group,
        "list",
        help="list your generations",
        handler=list_generations,
        reads=True,
        examples=["contentpipe generations list", "contentpipe generations list --kind video -o json"],
    )
    listing.add_argument("--kind", choices=("video", "image", "text"))
    listing.add_argument("--state", choices=("queued", "running", "succeeded", "failed", "canceled"))
    add_paging(listing)
    for name, handler, help_text in (
        ("get", get_generation, "show one generation"),
        ("cancel", cancel_generation, "cancel a generation that has not ended"),
    ):
        command = add_command(
            group,
            name,
            help=help_text,
            handler=handler,
            reads=True,
            examples=[f"contentpipe generations {name} generations/0193..."],
        )
        command.add_argument("generation", help="generations/ID, ID or a unique prefix of ID")


def _register_posts(sub: SubParsers) -> None:
    group = add_group(
        sub,
        "posts",
        help="publish posts through connections; list, cancel, resolve",
        examples=['contentpipe posts create --connection @outbox --text "hello" --media file:///tmp/a.mp4'],
    )
    create = add_command(
        group,
        "create",
        help="queue a post",
        handler=create_post,
        reads=True,
        examples=[
            'contentpipe posts create --connection @outbox --text "hello world"',
            'contentpipe posts create --connection connections/0193... --text "new video" --media https://example.com/v.mp4',
            "contentpipe posts create -f post.yaml",
        ],
    )
    create.add_argument("-f", "--file", help="YAML or JSON with the fields of contentpipe.api.oauth.v1.Post")
    create.add_argument("--connection", help="connections/ID, ID or @PLATFORM")
    create.add_argument("--text", default="")
    create.add_argument("--media", action="append", default=[], help="media URI (repeatable); kind from the extension")
    create.add_argument("--validate-only", action="store_true")

    listing = add_command(
        group,
        "list",
        help="list your posts",
        handler=list_posts,
        reads=True,
        examples=["contentpipe posts list", "contentpipe posts list --platform outbox --state published"],
    )
    listing.add_argument("--platform", choices=PLATFORM_CHOICES)
    listing.add_argument("--state", choices=("queued", "publishing", "published", "failed", "canceled", "unconfirmed"))
    listing.add_argument("--connection", default="")
    add_paging(listing)
    for name, handler, help_text in (
        ("get", get_post, "show one post"),
        ("cancel", cancel_post, "cancel a queued post"),
    ):
        command = add_command(
            group,
            name,
            help=help_text,
            handler=handler,
            reads=True,
            examples=[f"contentpipe posts {name} posts/0193..."],
        )
        command.add_argument("post", help="posts/ID, ID or a unique prefix of ID")
    resolve = add_command(
        group,
        "resolve",
        help="resolve an UNCONFIRMED post by hand",
        handler=resolve_post,
        reads=True,
        examples=[
            "contentpipe posts resolve posts/0193... --published --platform-post-id 1790000000000000000",
            "contentpipe posts resolve posts/0193... --not-published",
        ],
    )
    resolve.add_argument("post", help="posts/ID, ID or a unique prefix of ID")
    outcome = resolve.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--published", action="store_true", help="it went out")
    outcome.add_argument("--not-published", action="store_true", help="it did not; queue it again")
    resolve.add_argument("--platform-post-id", default="")
    resolve.add_argument("--permalink", default="")


def _register_notifications(sub: SubParsers) -> None:
    group = add_group(
        sub,
        "notifications",
        help="what needs your attention (failed runs, deactivated jobs, reconnects)",
        examples=["contentpipe notifications list --unread"],
    )
    listing = add_command(
        group,
        "list",
        help="list your notifications, newest first",
        handler=list_notifications,
        reads=True,
        examples=["contentpipe notifications list", "contentpipe notifications list --unread -o json"],
    )
    listing.add_argument("--unread", action="store_true", help="only unread ones")
    add_paging(listing)
    get = add_command(
        group,
        "get",
        help="show one notification",
        handler=get_notification,
        reads=True,
        examples=[
            "contentpipe notifications get notifications/0193...",
            "contentpipe notifications get 0193... -o json",
        ],
    )
    get.add_argument("notification", help="notifications/ID, ID or a unique prefix of ID")
    ack = add_command(
        group,
        "ack",
        help="mark a notification as read",
        handler=ack_notification,
        reads=True,
        examples=["contentpipe notifications ack notifications/0193..."],
    )
    ack.add_argument("notification", help="notifications/ID, ID or a unique prefix of ID")


async def create_generation(session: Session, args: argparse.Namespace) -> int:
    if args.file:
        generation = parse_message(read_document(args.file), gen_pb.Generation, source=args.file)
    else:
        if not args.kind or not args.prompt:
            raise CliError("--kind and --prompt are required (or -f FILE)", EXIT_USAGE)
        generation = gen_pb.Generation(
            kind=gen_pb.GenerationKind.Value(f"GENERATION_KIND_{args.kind.upper()}"),
            prompt=args.prompt,
            provider=args.provider,
            model=args.model,
            options=gen_pb.GenerationOptions(
                width=args.width, height=args.height, duration_seconds=args.duration, fps=args.fps, seed=args.seed
            ),
        )
    request = gen_pb.CreateGenerationRequest(generation=generation, request_id=new_id())
    response = await session.call("generation", session.generations.CreateGeneration, request)
    result = response.generation
    if args.wait:
        try:
            result = await _wait_generation(session, result)
        except asyncio.CancelledError:  # Ctrl-C stops the waiting, not the generation
            print_still_going(
                "the generation",
                follow=f"contentpipe generations get {result.name}",
                cancel=f"contentpipe generations cancel {result.name}",
            )
            raise
    print_resource(result, args.output)
    if args.wait and result.state != gen_pb.GENERATION_STATE_SUCCEEDED:
        return EXIT_FAILED
    return EXIT_OK


async def _wait_generation(session: Session, result: gen_pb.Generation) -> gen_pb.Generation:
    shown = ""
    while result.state not in _GEN_TERMINAL:
        await asyncio.sleep(0.5)
        got = await session.call(
            "generation", session.generations.GetGeneration, gen_pb.GetGenerationRequest(name=result.name)
        )
        result = got.generation
        line = f"{result.name} {_gen_state(result)} {result.progress:.0%}"
        if line != shown:  # one line per change, not per poll
            print(line, file=sys.stderr, flush=True)
            shown = line
    return result


async def list_generations(session: Session, args: argparse.Namespace) -> int:
    request = gen_pb.ListGenerationsRequest(
        page_size=args.page_size,
        page_token=args.page_token,
        kind=gen_pb.GenerationKind.Value(f"GENERATION_KIND_{args.kind.upper()}") if args.kind else 0,  # type: ignore[arg-type]
        state=gen_pb.GenerationState.Value(f"GENERATION_STATE_{args.state.upper()}") if args.state else 0,  # type: ignore[arg-type]
    )
    response = await session.call("generation", session.generations.ListGenerations, request)
    print_list(response, "generations", GENERATION_COLUMNS, args.output)
    return EXIT_OK


async def get_generation(session: Session, args: argparse.Namespace) -> int:
    name = await resolve_name(session, "generations", args.generation)
    response = await session.call(
        "generation", session.generations.GetGeneration, gen_pb.GetGenerationRequest(name=name)
    )
    print_resource(response.generation, args.output)
    return EXIT_OK


async def cancel_generation(session: Session, args: argparse.Namespace) -> int:
    name = await resolve_name(session, "generations", args.generation)
    response = await session.call(
        "generation", session.generations.CancelGeneration, gen_pb.CancelGenerationRequest(name=name)
    )
    print_resource(response.generation, args.output)
    return EXIT_OK


def _gen_state(generation: gen_pb.Generation) -> str:
    return gen_pb.GenerationState.Name(generation.state).removeprefix("GENERATION_STATE_")


def _media(uri: str) -> post_pb.Media:
    content_type = mimetypes.guess_type(uri)[0] or ""
    if content_type.startswith("video/"):
        kind = post_pb.MEDIA_KIND_VIDEO
    elif content_type.startswith("image/"):
        kind = post_pb.MEDIA_KIND_IMAGE
    else:
        raise CliError(f"--media {uri}: cannot tell image from video by the extension; use -f with `kind:`", EXIT_USAGE)
    return post_pb.Media(uri=uri, kind=kind, content_type=content_type)


async def create_post(session: Session, args: argparse.Namespace) -> int:
    from contentpipe.cli.platforms import connection_for_platform

    if args.file:
        document = read_document(args.file)
        if isinstance(document, dict) and str(document.get("connection", "")).startswith("@"):
            document["connection"] = await connection_for_platform(session, document["connection"][1:])
        post = parse_message(document, post_pb.Post, source=args.file)
    else:
        if not args.connection:
            raise CliError("--connection is required (or -f FILE)", EXIT_USAGE)
        connection = (
            await connection_for_platform(session, args.connection[1:])
            if args.connection.startswith("@")
            else resource_name("connections", args.connection)
        )
        post = post_pb.Post(connection=connection, text=args.text, media=[_media(uri) for uri in args.media])
    request = post_pb.CreatePostRequest(post=post, request_id=new_id(), validate_only=args.validate_only)
    response = await session.call("oauth", session.posts.CreatePost, request)
    print_resource(response.post, args.output)
    return EXIT_OK


async def list_posts(session: Session, args: argparse.Namespace) -> int:
    request = post_pb.ListPostsRequest(
        page_size=args.page_size,
        page_token=args.page_token,
        state=post_pb.PostState.Value(f"POST_STATE_{args.state.upper()}") if args.state else 0,  # type: ignore[arg-type]
        platform=parse_platform(args.platform) if args.platform else 0,  # type: ignore[arg-type]
        connection=resource_name("connections", args.connection) if args.connection else "",
    )
    response = await session.call("oauth", session.posts.ListPosts, request)
    print_list(response, "posts", POST_COLUMNS, args.output)
    return EXIT_OK


async def get_post(session: Session, args: argparse.Namespace) -> int:
    response = await session.call(
        "oauth", session.posts.GetPost, post_pb.GetPostRequest(name=await resolve_name(session, "posts", args.post))
    )
    print_resource(response.post, args.output)
    return EXIT_OK


async def cancel_post(session: Session, args: argparse.Namespace) -> int:
    name = await resolve_name(session, "posts", args.post)
    response = await session.call("oauth", session.posts.CancelPost, post_pb.CancelPostRequest(name=name))
    print_resource(response.post, args.output)
    return EXIT_OK


async def resolve_post(session: Session, args: argparse.Namespace) -> int:
    request = post_pb.ResolvePostRequest(
        name=await resolve_name(session, "posts", args.post),
        published=bool(args.published),
        platform_post_id=args.platform_post_id,
        permalink=args.permalink,
    )
    response = await session.call("oauth", session.posts.ResolvePost, request)
    print_resource(response.post, args.output)
    return EXIT_OK


async def list_notifications(session: Session, args: argparse.Namespace) -> int:
    request = note_pb.ListNotificationsRequest(
        page_size=args.page_size, page_token=args.page_token, unread_only=args.unread
    )
    response = await session.call("scheduler", session.notifications.ListNotifications, request)
    print_list(response, "notifications", NOTIFICATION_COLUMNS, args.output)
    return EXIT_OK


async def get_notification(session: Session, args: argparse.Namespace) -> int:
    name = await resolve_name(session, "notifications", args.notification)
    response = await session.call(
        "scheduler", session.notifications.GetNotification, note_pb.GetNotificationRequest(name=name)
    )
    print_resource(response.notification, args.output)
    return EXIT_OK


async def ack_notification(session: Session, args: argparse.Namespace) -> int:
    name = await resolve_name(session, "notifications", args.notification)
    response = await session.call(
        "scheduler", session.notifications.AcknowledgeNotification, note_pb.AcknowledgeNotificationRequest(name=name)
    )
    print_resource(response.notification, args.output)
    return EXIT_OK
