"""The contracts document one page_size rule, the one `contentpipe.common.pagination` applies."""

from __future__ import annotations

from pathlib import Path

import pytest
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.pagination import MAX_PAGE_SIZE, page_size
from google.protobuf import descriptor_pb2

pytestmark = pytest.mark.unit

DESCRIPTORS = Path(__file__).resolve().parents[3] / "libs/api/src/contentpipe/api/descriptor_set.binpb"


def _page_size_comments() -> dict[str, str]:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())
    found: dict[str, str] = {}
    for proto in files.file:
        if not proto.package.startswith("contentpipe."):
            continue
        for location in proto.source_code_info.location:
            path = list(location.path)
            # [4, message, 2, field]: a top-level message's field.
            if len(path) == 4 and path[0] == 4 and path[2] == 2:
                message = proto.message_type[path[1]]
                if message.field[path[3]].name == "page_size":
                    found[f"{proto.package}.{message.name}"] = " ".join(location.leading_comments.split())
    return found


def test_every_page_size_documents_the_coercion_that_applies() -> None:
    comments = _page_size_comments()
    assert len(comments) >= 8, comments  # every List* request of the four services
    for message, comment in comments.items():
        assert "0 means 50" in comment and "above 1,000 are coerced to 1,000" in comment, message
    assert page_size(0) == 50
    assert page_size(MAX_PAGE_SIZE + 1) == page_size(10**6) == 1000
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_one_etag_format_and_check() -> None:
    from contentpipe.common.errors import Aborted
    from contentpipe.common.etags import check_etag, etag_for

    assert etag_for(7) == '"7"'
    check_etag("", 7, "jobs/j")  # no etag sent: no check
    check_etag('"7"', 7, "jobs/j")
    with pytest.raises(Aborted) as stale:
        check_etag('"6"', 7, "jobs/j")
    assert stale.value.reason == "ETAG_MISMATCH" and "jobs/j changed since it was read" in stale.value.message
