"""One etag format for every resource (AIP-154): a quoted version number, checked the same way everywhere."""

from __future__ import annotations

from contentpipe.common.errors import Aborted


def etag_for(version: int) -> str:
    """`"7"`: an RFC 9110 strong entity tag of the resource's version counter (bumped on every change)."""
    return f'"{version}"'


def check_etag(sent: str, version: int, resource: str) -> None:
    """Aborted(ETAG_MISMATCH) when the caller sent an etag that is not the current one; empty means no check."""
    current = etag_for(version)
    if sent and sent != current:
        raise Aborted(
            f"{resource} changed since it was read (etag {sent}, now {current}); read it again and retry",
            reason="ETAG_MISMATCH",
        )
