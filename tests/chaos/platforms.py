"""The platforms chaos users post to, and how to read back what each one actually holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from contentpipe.api.oauth.v1 import connection_service_pb2 as conn
from contentpipe.api.oauth.v1 import platform_pb2

from tests.chaos.faults import FaultInjector
from tests.chaos.invariants import DeliveredPost

if TYPE_CHECKING:
    from tests.chaos.runner import Driver


class Platform(Protocol):
    name: str
    faults: FaultInjector | None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def service_env(self) -> dict[str, str]: ...
    def connect(self, driver: Driver, user: str) -> str: ...
    def delivered(self) -> list[DeliveredPost]: ...


class OutboxPlatform:
    """The embedded outbox: posts land as files in a folder the oauth service writes."""

    name = "outbox"
    faults: FaultInjector | None = None

    def __init__(self, workdir: Path) -> None:
        self.folder = workdir / "outbox"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        return None

    def service_env(self) -> dict[str, str]:
        return {
            "OAUTH_OUTBOX_DIR": str(self.folder),
            "OAUTH_POSTING_POLL_INTERVAL": "300ms",
            "OAUTH_POSTING_LEASE": "6s",
            "OAUTH_POSTING_BACKOFF": "1s",
            "OAUTH_POSTING_BACKOFF_MAX": "5s",
            "OAUTH_POSTING_RECONCILE_DELAY": "1s",
        }

    def connect(self, driver: Driver, user: str) -> str:
        request = conn.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX)
        return str(driver.call("CompleteConnection", request, user).connection.name)

    def delivered(self) -> list[DeliveredPost]:
        """`<outbox>/<post id>/post.json` per published post (staging folders are not posts yet)."""
        found: list[DeliveredPost] = []
        for document in sorted(self.folder.glob("*/post.json")):
            if document.parent.name.startswith("."):
                continue
            try:
                post = json.loads(document.read_text())
            except (OSError, ValueError):
                continue
            found.append(DeliveredPost("outbox", str(post.get("id", document.parent.name)), str(post.get("text", ""))))
        return found


def chaos_platforms(workdir: Path, *, seed: int, names: list[str]) -> list[Platform]:
    """The platforms named in PLATFORMS (`none`: pipelines only generate, nothing is posted)."""
    known: dict[str, Platform] = {"outbox": OutboxPlatform(workdir)}
    del seed
    unknown = sorted(set(names) - set(known) - {"none"})
    if unknown:
        raise ValueError(f"PLATFORMS: unknown {unknown}; known: {sorted(known)} or none")
    return [known[name] for name in names if name in known]
