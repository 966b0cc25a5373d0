"""Short ids: a unique prefix of an id names the resource (as in git, docker, kubectl); ambiguity lists candidates.

Resolution is client-side, over the caller's own resources (a List call, paged), so the server API stays the AIP
one: full names only. A full-length id is never looked up.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.scheduler.v1 import notification_service_pb2 as note_pb
from contentpipe.cli.errors import EXIT_INVALID, EXIT_NOT_FOUND, CliError
from contentpipe.cli.session import Session

FULL_ID_LENGTH = 32  # contentpipe.common.ids.new_id(): 32 hex digits
PAGE_SIZE = 1000
SCAN_LIMIT = 5000  # resources a prefix is matched against; beyond that, type the full id
SHOWN_CANDIDATES = 10
_RUN_NAME = re.compile(r"^pipelines/([^/]+)/runs/([^/]+)$")

Page = tuple[list[str], str]  # resource names, next page token


def _is_short(resource_id: str) -> bool:
    return 0 < len(resource_id) < FULL_ID_LENGTH and "/" not in resource_id


async def _match(kind: str, value: str, prefix: str, list_page: Callable[[str], Awaitable[Page]]) -> str | None:
    """The one name whose last segment starts with `prefix`, None if none; CliError listing them if several."""
    found: list[str] = []
    token, scanned = "", 0
    while True:
        names, token = await list_page(token)
        scanned += len(names)
        found.extend(name for name in names if name.rsplit("/", 1)[-1].startswith(prefix))
        if not token or scanned >= SCAN_LIMIT:
            break
    exact = [name for name in found if name.rsplit("/", 1)[-1] == prefix]
    if exact:
        return exact[0]
    if len(found) <= 1:
        return found[0] if found else None
    shown = "\n  ".join(found[:SHOWN_CANDIDATES])
    more = f"\n  ... and {len(found) - SHOWN_CANDIDATES} more" if len(found) > SHOWN_CANDIDATES else ""
    raise CliError(
        f"{value!r} is ambiguous: {len(found)} {kind} have an id starting with {prefix!r}:\n  {shown}{more}",
        EXIT_INVALID,
        hint="type more characters of the id (or the full name)",
    )


async def _pipelines(session: Session, token: str) -> Page:
    request = pb.ListPipelinesRequest(page_size=PAGE_SIZE, page_token=token)
    response = await session.call("pipelines", session.pipelines.ListPipelines, request)
    return [p.name for p in response.pipelines], response.next_page_token


async def _generations(session: Session, token: str) -> Page:
    request = gen_pb.ListGenerationsRequest(page_size=PAGE_SIZE, page_token=token)
    response = await session.call("generation", session.generations.ListGenerations, request)
    return [g.name for g in response.generations], response.next_page_token


async def _posts(session: Session, token: str) -> Page:
    request = post_pb.ListPostsRequest(page_size=PAGE_SIZE, page_token=token)
    response = await session.call("oauth", session.posts.ListPosts, request)
    return [p.name for p in response.posts], response.next_page_token


async def _notifications(session: Session, token: str) -> Page:
    request = note_pb.ListNotificationsRequest(page_size=PAGE_SIZE, page_token=token)
    response = await session.call("scheduler", session.notifications.ListNotifications, request)
    return [n.name for n in response.notifications], response.next_page_token


# Collections whose ids are generated (32 hex digits), so a shorter one can only be a prefix. Jobs are not here:
# their ids are chosen by people, and a short id is an id.
_LISTERS: dict[str, Callable[[Session, str], Awaitable[Page]]] = {
    "pipelines": _pipelines,
    "generations": _generations,
    "posts": _posts,
    "notifications": _notifications,
}


async def resolve_name(session: Session, collection: str, value: str) -> str:
    """`COLLECTION/ID`, `ID` or a unique prefix of ID -> `COLLECTION/ID` (ambiguous: CliError with the candidates)."""
    resource_id = value.removeprefix(f"{collection}/")
    name = f"{collection}/{resource_id}"
    lister = _LISTERS[collection]
    if not _is_short(resource_id):
        return name
    return await _match(collection, value, resource_id, lambda token: lister(session, token)) or name


async def pipeline_name(session: Session, value: str) -> str:
    """`pipelines/ID`, `ID` or a unique prefix of ID -> `pipelines/ID`."""
    return await resolve_name(session, "pipelines", value)


async def run_name(session: Session, value: str) -> str:
    """`pipelines/P/runs/R` (either id may be a unique prefix) or just R (a run id or its prefix) -> the full name."""
    full = _RUN_NAME.match(value)
    if full is not None:
        parent = await pipeline_name(session, full.group(1))
        run_id = full.group(2)
    elif "/" not in value and value:
        parent, run_id = "pipelines/-", value
    else:
        return value  # the server names what is wrong with it
    if not _is_short(run_id) and parent != "pipelines/-":
        return f"{parent}/runs/{run_id}"

    async def page(token: str) -> Page:
        request = pb.ListPipelineRunsRequest(parent=parent, page_size=PAGE_SIZE, page_token=token)
        response = await session.call("pipelines", session.pipelines.ListPipelineRuns, request)
        return [r.name for r in response.runs], response.next_page_token

    found = await _match("runs", value, run_id, page)
    if found is not None:
        return found
    if parent == "pipelines/-":
        raise CliError(
            f"no run of yours has an id starting with {run_id!r}",
            EXIT_NOT_FOUND,
            hint="`contentpipe runs list` shows your runs",
        )
    return f"{parent}/runs/{run_id}"
