"""Which fields an Update call changes (AIP-134): the mask sent, or else the fields the request populates."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from contentpipe.common.errors import InvalidArgument
from google.protobuf.message import Message


def effective_update_mask(
    resource: Message, paths: Sequence[str], updatable: Collection[str], *, field: str = "update_mask"
) -> list[str]:
    """`paths` when the caller sent a mask (`*` included); without one, the updatable fields set in `resource`.

    An absent mask never means "everything": a client that sends only the field it changes must not clear
    the others. Output-only and identity fields (`name`, `etag`) are not updatable, so they never count.
    Raises InvalidArgument on `field` when the request changes nothing.
    """
    if paths:
        return list(paths)
    populated = [descriptor.name for descriptor, _ in resource.ListFields() if descriptor.name in updatable]
    if not populated:
        raise InvalidArgument.single(
            field,
            f"nothing to update: set the fields to change ({', '.join(updatable)}) or name them in update_mask "
            "(`*` replaces them all)",
        )
    return populated
