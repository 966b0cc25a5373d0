"""IANA time-zone lookup for user-supplied names (pure Python: domain code may use it)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def find_time_zone(name: str) -> ZoneInfo | None:
    """The zone called `name`, or None when there is none, however malformed the name.

    `ZoneInfo` raises more than ZoneInfoNotFoundError for a hostile name: ValueError (absolute or `..` paths,
    NUL, a file that is not TZif), IsADirectoryError (`Europe`), OSError ENAMETOOLONG (a 300-character name).
    All of them mean "no such zone", which callers report as INVALID_ARGUMENT on their field.
    """
    if not name or name != name.strip():
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
