"""An in-memory TokenProvider (the connections side's seam) for posting tests: connections, tokens, refreshes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from contentpipe.common.errors import FailedPrecondition, NotFound
from contentpipe.oauth.domain.connections import ConnectionStatus, Platform, Profile
from contentpipe.oauth.service_layer.tokens import (
    ConnectionCredentials,
    ConnectionSummary,
    SubAccountCredentials,
)


@dataclass
class FakeConnection:
    id: str
    owner: str
    platform: str
    account_id: str
    token: str
    status: str = "active"
    pages: dict[str, str] = field(default_factory=dict)  # Facebook page id -> page token
    refresh_to: str = ""  # force_refresh hands out this token ("" and invalid_grant: NEEDS_REAUTH)
    invalid_grant: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


class FakeTokens:
    """Implements `contentpipe.oauth.service_layer.tokens.TokenProvider` over a dict (or a JSON file)."""

    def __init__(self, path: Path | None = None) -> None:
        self.connections: dict[str, FakeConnection] = {}
        self.refreshes: list[str] = []
        self.reauth_reasons: dict[str, str] = {}
        self._path = path

    def add(self, connection: FakeConnection) -> FakeConnection:
        self.connections[connection.id] = connection
        return connection

    def save(self, path: Path) -> None:
        path.write_text(json.dumps([c.__dict__ for c in self.connections.values()]))

    def _load(self) -> None:
        if self._path is not None and self._path.exists():
            self.connections = {c["id"]: FakeConnection(**c) for c in json.loads(self._path.read_text())}

    def _find(self, owner: str, connection_id: str) -> FakeConnection:
        self._load()
        found = self.connections.get(connection_id)
        if found is None or found.owner != owner:
            raise NotFound(f"connections/{connection_id} not found", reason="CONNECTION_NOT_FOUND")
        return found

    def _credentials(self, c: FakeConnection) -> ConnectionCredentials:
        if c.status in ("needs_reauth", "revoked"):
            raise FailedPrecondition(
                f"connections/{c.id} must be authorized again",
                reason="CONNECTION_NEEDS_REAUTH",
                metadata={"connection": f"connections/{c.id}"},
            )
        return ConnectionCredentials(
            connection_id=c.id,
            owner=c.owner,
            platform=Platform(c.platform),
            account_id=c.account_id,
            access_token=c.token,
            metadata=dict(c.metadata),
            sub_accounts=tuple(
                SubAccountCredentials(page, f"Page {page}", "facebook_page", token) for page, token in c.pages.items()
            ),
        )

    async def fresh_credentials(self, owner: str, connection_id: str) -> ConnectionCredentials:
        return self._credentials(self._find(owner, connection_id))

    async def force_refresh(self, owner: str, connection_id: str) -> ConnectionCredentials:
        c = self._find(owner, connection_id)
        self.refreshes.append(connection_id)
        if c.invalid_grant or not c.refresh_to:
            c.status = "needs_reauth"
            raise FailedPrecondition(
                "invalid_grant: the refresh token was revoked",
                reason="CONNECTION_NEEDS_REAUTH",
                metadata={"connection": f"connections/{c.id}"},
            )
        c.token = c.refresh_to
        return self._credentials(c)

    async def mark_needs_reauth(self, owner: str, connection_id: str, reason: str) -> None:
        c = self._find(owner, connection_id)
        c.status = "needs_reauth"
        self.reauth_reasons[connection_id] = reason

    async def get_connection(self, owner: str, connection_id: str) -> ConnectionSummary:
        c = self._find(owner, connection_id)
        return ConnectionSummary(
            connection_id=c.id,
            owner=c.owner,
            platform=Platform(c.platform),
            status=ConnectionStatus(c.status),
            profile=Profile(account_id=c.account_id, username=f"user{c.account_id}"),
            sub_accounts=tuple(SubAccountCredentials(page, f"Page {page}", "facebook_page") for page in c.pages),
        )
