"""Token sets as platforms hand them out, and the rules for merging a new set into a stored one."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class TokenSet:
    """Tokens of one connection. repr hides the secrets so a stray log line cannot leak them."""

    access_token: str = field(repr=False)
    refresh_token: str = field(default="", repr=False)
    expires_at: datetime | None = None
    refresh_expires_at: datetime | None = None
    scopes: tuple[str, ...] | None = None  # None: the response did not say (keep what we know)

    def merged_into(self, stored: TokenSet | None) -> TokenSet:
        """This new set, keeping the stored refresh token (and its expiry) when the platform sent none.

        Platforms (Google refresh, reconnects without consent) often omit `refresh_token`; wiping the stored one
        would force the user to reconnect (a bug other OAuth integrations have shipped).
        """
        merged = self
        if stored is not None and not self.refresh_token and stored.refresh_token:
            merged = replace(merged, refresh_token=stored.refresh_token, refresh_expires_at=stored.refresh_expires_at)
        if stored is not None and self.scopes is None:
            merged = replace(merged, scopes=stored.scopes)
        return merged


def expiry_from(now: datetime, expires_in: object) -> datetime | None:
    """`now + expires_in` seconds; None when the platform gave no (usable) lifetime."""
    try:
        seconds = int(str(expires_in))
    except (TypeError, ValueError):
        return None
    if seconds <= 0:
        return None
    return now + timedelta(seconds=seconds)


def parse_scopes(raw: object) -> tuple[str, ...] | None:
    """A `scope` field that may be space- or comma-separated (LinkedIn and TikTok use commas), or a list."""
    if raw is None:
        return None
    items = [str(s) for s in raw] if isinstance(raw, list | tuple) else str(raw).replace(",", " ").split()
    return tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
