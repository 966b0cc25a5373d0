"""Posting inside the real `contentpipe-oauth serve`, wired by bootstrap to the real connections half: connect the
outbox, post a generated MP4 from local storage, find it PUBLISHED with a file:// permalink and its bytes copied."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from contentpipe.api.oauth.v1 import connection_service_pb2 as conn
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc, platform_pb2, posting_service_pb2_grpc
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb

from tests.oauth.posting.harness import make_media
from tests.support import ServiceProcess, bearer

pytestmark = pytest.mark.integration


def test_outbox_post_through_the_real_service(
    database_url: str, tmp_path: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    if database_url.startswith("postgresql"):
        import sqlalchemy as sa

        engine = sa.create_engine(database_url)
        with engine.begin() as db:
            if db.execute(sa.text("SELECT to_regclass('posts')")).scalar():
                db.execute(sa.text("DELETE FROM posts"))
        engine.dispose()
    clip, _image = make_media(tmp_path / "oauth" / "data" / "generated-content" / "user-1" / "generation-1")
    service = start_service(
        "oauth",
        database_url=database_url,
        env={"OAUTH_POSTING_POLL_INTERVAL": "0.1", "OAUTH_TOKEN_KEYS": "k1:" + "A" * 43 + "="},
    )
    with grpc.insecure_channel(service.address) as channel:
        connection = (
            connection_service_pb2_grpc.ConnectionServiceStub(channel)
            .CompleteConnection(
                conn.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX), metadata=bearer("user-1")
            )
            .connection
        )
        posting = posting_service_pb2_grpc.PostingServiceStub(channel)
        media = pb.Media(uri=clip.as_uri(), kind=pb.MEDIA_KIND_VIDEO, content_type="video/mp4")
        created = posting.CreatePost(
            pb.CreatePostRequest(
                post=pb.Post(connection=connection.name, text="caption", media=[media]), request_id="r1"
            ),
            metadata=bearer("user-1"),
        ).post
        deadline = time.monotonic() + 30
        post = created
        while post.state != pb.POST_STATE_PUBLISHED and time.monotonic() < deadline:
            time.sleep(0.1)
            post = posting.GetPost(pb.GetPostRequest(name=created.name), metadata=bearer("user-1")).post
        with pytest.raises(grpc.RpcError) as info:
            posting.GetPost(pb.GetPostRequest(name=created.name), metadata=bearer("user-2"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert post.state == pb.POST_STATE_PUBLISHED, (post.last_error, service.logs()[-3000:])
    assert post.platform == platform_pb2.PLATFORM_OUTBOX
    folder = Path(post.permalink.removeprefix("file://")).parent
    document = json.loads((folder / "post.json").read_text())
    assert document["text"] == "caption" and post.platform_post_id == created.name.removeprefix("posts/")
    assert (folder / document["media"][0]["file"]).read_bytes() == clip.read_bytes()
