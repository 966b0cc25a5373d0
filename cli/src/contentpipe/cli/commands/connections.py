"""`contentpipe connections ...`: connect social accounts (OAuth with a loopback callback), list, refresh, delete."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import webbrowser
from urllib.parse import urlsplit

from contentpipe.api.oauth.v1 import connection_service_pb2 as pb
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.cli.callback import CallbackListener
from contentpipe.cli.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from contentpipe.cli.output import age_col, col, print_list, print_resource, print_table, to_dict
from contentpipe.cli.parsing import SubParsers, add_command, add_group, resource_name
from contentpipe.cli.platforms import PLATFORM_CHOICES, parse_platform
from contentpipe.cli.session import Session

DEFAULT_REDIRECT_URI = "http://127.0.0.1:8765/callback"
REMOTE_POLL_SECONDS = 2.0
CONNECTION_COLUMNS = [
    col("NAME", "name"),
    col("PLATFORM", "platform", enum_prefix="PLATFORM_"),
    col("ACCOUNT", "profile.username"),
    col("STATUS", "status", enum_prefix="CONNECTION_STATUS_"),
    age_col("TOKEN EXPIRES", "access_token_expire_time"),
    col("LAST ERROR", "last_error.reason"),
]


def register(sub: SubParsers) -> None:
    group = add_group(
        sub,
        "connections",
        help="connect social accounts and manage the connections",
        examples=["contentpipe connections connect outbox", "contentpipe connections connect linkedin"],
    )
    connect_parser = add_command(
        group,
        "connect",
        help="connect an account: prints the authorization URL and waits for the redirect",
        handler=connect,
        reads=True,
        description=(
            "Connect an account on PLATFORM. For `outbox` (the embedded local platform) the connection is made at\n"
            "once. For the others the authorization URL is printed (and opened in a browser unless --no-browser);\n"
            "a listener on the loopback redirect URI receives the platform's redirect and completes the\n"
            "connection. The redirect URI must be on the oauth service's allowlist (OAUTH_REDIRECT_URIS).\n"
            "With --remote the platform redirects to the deployment's hosted callback (OAUTH_CALLBACK_URL)\n"
            "instead: open the printed URL on any device (a phone works); the command waits until the\n"
            "connection appears."
        ),
        examples=[
            "contentpipe connections connect outbox",
            "contentpipe connections connect x --no-browser",
            "contentpipe connections connect linkedin --redirect-uri http://127.0.0.1:9000/oauth/callback",
            "contentpipe connections connect youtube --remote",
        ],
    )
    connect_parser.add_argument(
        "platform", choices=PLATFORM_CHOICES, metavar="PLATFORM", help=", ".join(PLATFORM_CHOICES)
    )
    connect_parser.add_argument(
        "--redirect-uri", default=DEFAULT_REDIRECT_URI, help=f"loopback redirect (default {DEFAULT_REDIRECT_URI})"
    )
    connect_parser.add_argument("--scope", action="append", default=[], help="extra scope to request (repeatable)")
    connect_parser.add_argument("--no-browser", action="store_true", help="only print the URL")
    connect_parser.add_argument(
        "--remote",
        action="store_true",
        help="redirect to the deployment's hosted callback; open the URL on any device and wait here",
    )
    connect_parser.add_argument(
        "--wait-timeout", type=float, default=600, help="seconds to wait for the redirect (default 600)"
    )

    listing = add_command(
        group,
        "list",
        help="list your connections",
        handler=list_connections,
        reads=True,
        examples=["contentpipe connections list", "contentpipe connections list --platform x -o json"],
    )
    listing.add_argument("--platform", choices=PLATFORM_CHOICES, help="only this platform")

    add_command(
        group,
        "platforms",
        help="list the platforms this deployment can connect",
        handler=list_platforms,
        reads=True,
        examples=["contentpipe connections platforms"],
    )

    for name, handler, help_text in (
        ("get", get_connection, "show one connection"),
        ("refresh", refresh_connection, "refresh a connection's tokens now"),
        ("delete", delete_connection, "revoke (where the platform can) and delete a connection"),
    ):
        command = add_command(
            group,
            name,
            help=help_text,
            handler=handler,
            reads=name != "delete",
            examples=[f"contentpipe connections {name} connections/0193..."],
        )
        command.add_argument("connection", help="connections/ID or ID")


async def connect(session: Session, args: argparse.Namespace) -> int:
    platform = parse_platform(args.platform)
    if platform == platform_pb2.PLATFORM_OUTBOX:
        request = pb.CompleteConnectionRequest(platform=platform)  # type: ignore[arg-type]
        response = await session.call("oauth", session.connections.CompleteConnection, request)
        _print_connection(response.connection, args.output)
        return EXIT_OK
    if args.remote:
        return await _connect_remote(session, args, platform)
    target = urlsplit(args.redirect_uri)
    if target.scheme != "http" or target.hostname not in ("127.0.0.1", "localhost", "::1") or not target.port:
        raise CliError(
            "--redirect-uri must be a loopback http URL with a port, e.g. " + DEFAULT_REDIRECT_URI, EXIT_USAGE
        )
    listener = CallbackListener(target.hostname, target.port, target.path)
    try:
        await listener.start()
    except OSError as exc:
        raise CliError(f"cannot listen on {target.hostname}:{target.port}: {exc.strerror}", EXIT_USAGE) from None
    try:
        start = await session.call(
            "oauth",
            session.connections.StartConnection,
            pb.StartConnectionRequest(platform=platform, redirect_uri=args.redirect_uri, extra_scopes=args.scope),  # type: ignore[arg-type]
        )
        print("Open this URL to authorize contentpipe:", file=sys.stderr)
        print(start.authorization_uri, flush=True)
        if not args.no_browser:
            webbrowser.open(start.authorization_uri)
        print(f"waiting for the redirect to {args.redirect_uri} ...", file=sys.stderr, flush=True)
        try:
            redirect = await listener.wait(args.wait_timeout)
        except TimeoutError:
            raise CliError(f"no redirect within {args.wait_timeout:.0f} s", EXIT_FAILED) from None
    finally:
        await listener.close()
    if redirect.error:
        raise CliError(
            f"{args.platform} refused the authorization: {redirect.error} {redirect.error_description}".strip(),
            EXIT_FAILED,
        )
    if redirect.state != start.state:
        raise CliError("the redirect's state does not match the one issued; start again", EXIT_FAILED)
    complete = pb.CompleteConnectionRequest(platform=platform, code=redirect.code, state=redirect.state)  # type: ignore[arg-type]
    response = await session.call("oauth", session.connections.CompleteConnection, complete)
    _print_connection(response.connection, args.output)
    return EXIT_OK


async def _connected_versions(session: Session, platform: int) -> dict[str, str]:
    """name → update time of the caller's connections on `platform` (what changes when one is made or renewed)."""
    request = pb.ListConnectionsRequest(platform=platform, page_size=1000)  # type: ignore[arg-type]
    response = await session.call("oauth", session.connections.ListConnections, request)
    return {c.name: c.update_time.ToJsonString() for c in response.connections}


async def _connect_remote(session: Session, args: argparse.Namespace, platform: int) -> int:
    before = await _connected_versions(session, platform)
    start = await session.call(
        "oauth",
        session.connections.StartConnection,
        pb.StartConnectionRequest(platform=platform, extra_scopes=args.scope),  # type: ignore[arg-type]
    )
    print("Open this URL on any device to authorize contentpipe:", file=sys.stderr)
    print(start.authorization_uri, flush=True)
    print("waiting for the connection to appear (Ctrl-C to stop) ...", file=sys.stderr, flush=True)
    deadline = time.monotonic() + args.wait_timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(min(REMOTE_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        after = await _connected_versions(session, platform)
        changed = [name for name, version in after.items() if before.get(name) != version]
        if changed:
            request = pb.GetConnectionRequest(name=changed[0])
            response = await session.call("oauth", session.connections.GetConnection, request)
            _print_connection(response.connection, args.output)
            return EXIT_OK
    raise CliError(
        f"no connection within {args.wait_timeout:.0f} s; the page the link led to says what went wrong", EXIT_FAILED
    )


def _print_connection(connection: pb.Connection, fmt: str) -> None:
    if fmt == "table":
        print_table([to_dict(connection)], CONNECTION_COLUMNS)
    else:
        print_resource(connection, fmt)


async def list_connections(session: Session, args: argparse.Namespace) -> int:
    platform = parse_platform(args.platform) if args.platform else 0
    request = pb.ListConnectionsRequest(platform=platform, page_size=100)  # type: ignore[arg-type]
    response = await session.call("oauth", session.connections.ListConnections, request)
    print_list(response, "connections", CONNECTION_COLUMNS, args.output)
    return EXIT_OK


async def list_platforms(session: Session, args: argparse.Namespace) -> int:
    response = await session.call("oauth", session.connections.ListPlatforms, pb.ListPlatformsRequest())
    columns = [
        col("PLATFORM", "platform", enum_prefix="PLATFORM_"),
        col("NAME", "display_name"),
        col("PKCE", "uses_pkce"),
        col("REFRESH", "supports_refresh"),
        col("SCOPES", "required_scopes"),
    ]
    print_list(response, "platforms", columns, args.output)
    return EXIT_OK


async def get_connection(session: Session, args: argparse.Namespace) -> int:
    name = resource_name("connections", args.connection)
    response = await session.call("oauth", session.connections.GetConnection, pb.GetConnectionRequest(name=name))
    print_resource(response.connection, args.output)
    return EXIT_OK


async def refresh_connection(session: Session, args: argparse.Namespace) -> int:
    name = resource_name("connections", args.connection)
    response = await session.call(
        "oauth", session.connections.RefreshConnection, pb.RefreshConnectionRequest(name=name)
    )
    _print_connection(response.connection, args.output)
    return EXIT_OK


async def delete_connection(session: Session, args: argparse.Namespace) -> int:
    name = resource_name("connections", args.connection)
    response = await session.call("oauth", session.connections.DeleteConnection, pb.DeleteConnectionRequest(name=name))
    revoked = (
        "revoked at the platform"
        if response.revoked_at_platform
        else f"not revoked at the platform ({response.revoke_error or 'not supported'})"
    )
    print(f"deleted {name}; {revoked}")
    return EXIT_OK
