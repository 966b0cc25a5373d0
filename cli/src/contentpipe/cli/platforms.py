"""Platform names people type (`x`, `outbox`) and the `@platform` connection references of manifests."""

from __future__ import annotations

from typing import Any

from contentpipe.api.oauth.v1 import connection_service_pb2 as conn_pb
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.cli.errors import EXIT_INVALID, EXIT_PRECONDITION, CliError
from contentpipe.cli.manifests import connection_references
from contentpipe.cli.session import Session

PLATFORMS: dict[str, int] = {
    "instagram": platform_pb2.PLATFORM_INSTAGRAM,
    "x": platform_pb2.PLATFORM_TWITTER,
    "twitter": platform_pb2.PLATFORM_TWITTER,
    "linkedin": platform_pb2.PLATFORM_LINKEDIN,
    "tiktok": platform_pb2.PLATFORM_TIKTOK,
    "google": platform_pb2.PLATFORM_GOOGLE,
    "youtube": platform_pb2.PLATFORM_GOOGLE,
    "facebook": platform_pb2.PLATFORM_FACEBOOK,
    "outbox": platform_pb2.PLATFORM_OUTBOX,
}
PLATFORM_CHOICES = sorted(PLATFORMS)


def parse_platform(value: str) -> int:
    key = value.lower().removeprefix("platform_")
    if key not in PLATFORMS:
        raise CliError(f"unknown platform {value!r}; one of {', '.join(PLATFORM_CHOICES)}", EXIT_INVALID)
    return PLATFORMS[key]


async def resolve_connection_references(session: Session, document: Any) -> None:
    """Replace each `@platform` with the caller's only connection on that platform (in place)."""
    cache: dict[str, str] = {}
    for connections, index, platform in list(connection_references(document)):
        if platform not in cache:
            cache[platform] = await connection_for_platform(session, platform)
        connections[index] = cache[platform]


async def connection_for_platform(session: Session, platform: str) -> str:
    value = parse_platform(platform)
    response = await session.call(
        "oauth",
        session.connections.ListConnections,
        conn_pb.ListConnectionsRequest(platform=value, page_size=100),  # type: ignore[arg-type]
    )
    usable = [c for c in response.connections if c.status != conn_pb.CONNECTION_STATUS_REVOKED]
    if not usable:
        raise CliError(
            f"@{platform}: you have no {platform} connection",
            EXIT_PRECONDITION,
            hint=f"connect one first: contentpipe connections connect {platform}",
        )
    if len(usable) > 1:
        names = ", ".join(c.name for c in usable)
        raise CliError(f"@{platform}: you have several {platform} connections ({names}); name one", EXIT_INVALID)
    return usable[0].name
