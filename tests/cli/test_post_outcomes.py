"""`contentpipe posts get` shows why a post FAILED: the reason code and the message naming the fix."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from contentpipe.api.oauth.v1 import posting_service_pb2_grpc as pb_grpc

from tests.cli.conftest import RunCli

pytestmark = pytest.mark.integration

FIX = (
    "TikTok lets an app that has not passed its audit post only with privacy level SELF_ONLY: have the app "
    "audited in the TikTok developer portal, or post with privacy_level SELF_ONLY"
)


POST_ID = "01a23c504cad78a7942588acde8dd9cb"  # a full id: nothing to resolve by prefix


class FailedPosts(pb_grpc.PostingServiceServicer):
    def GetPost(self, request: pb.GetPostRequest, context: grpc.ServicerContext) -> pb.GetPostResponse:
        return pb.GetPostResponse(
            post=pb.Post(
                name=request.name,
                state=pb.POST_STATE_FAILED,
                last_error=pb.PostError(
                    error_class=pb.POST_ERROR_CLASS_REJECTED_BY_PLATFORM, reason="TIKTOK_APP_NOT_AUDITED", message=FIX
                ),
            )
        )


@pytest.mark.parametrize("output", ["table", "json"])
def test_posts_get_shows_the_failure_reason_and_the_fix(
    output: str, run_cli: RunCli, fake_server: Any, token: str
) -> None:
    servicer = FailedPosts()  # type: ignore[abstract]  # only GetPost is called
    address = fake_server((servicer, pb_grpc.add_PostingServiceServicer_to_server))
    result = run_cli(
        "posts", "get", POST_ID, "-o", output, env={"CONTENTPIPE_OAUTH_ADDR": address, "CONTENTPIPE_TOKEN": token}
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # the table folds long values over lines
    assert "TIKTOK_APP_NOT_AUDITED" in text
    assert "have the app audited in the TikTok developer portal, or post with privacy_level SELF_ONLY" in text
    assert "FAILED" in text
