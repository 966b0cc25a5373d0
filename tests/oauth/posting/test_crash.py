"""Kill the posting service (a real subprocess, SIGKILL) at random points during 100 posts, several times right
after the create call reached the platform: every post ends PUBLISHED or UNCONFIRMED, and the fake platform holds
each post at most once (zero duplicates) while every PUBLISHED post is there (zero lost)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from contentpipe.api.oauth.v1 import posting_service_pb2_grpc

from tests.fakes import LoopbackHTTPServer
from tests.fakes.publishing_platforms import FakePost, FakeX
from tests.fakes.publishing_tokens import FakeConnection, FakeTokens
from tests.oauth.posting.harness import FAST, make_media
from tests.support import ServiceProcess, bearer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
POSTS = 100
ACCOUNTS = 4
KILLS_AFTER_CREATE = {7, 33, 61}  # the n-th create call reaching X kills the service before X answers


def _reset_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    engine = sa.create_engine(url)
    with engine.begin() as connection, contextlib.suppress(Exception):
        connection.execute(sa.text("DELETE FROM posts"))
        connection.execute(sa.text("DELETE FROM posting_rate_limits"))
    engine.dispose()


def test_sigkill_during_100_posts_loses_none_and_duplicates_none(database_url: str, tmp_path: Path) -> None:
    rng = random.Random(4)
    _reset_database(database_url)
    fake = FakeX()
    fake.processing_polls = 0
    tokens = FakeTokens()
    for n in range(ACCOUNTS):
        c = tokens.add(
            FakeConnection(id=f"x{n}", owner="user-1", platform="twitter", account_id=str(100 + n), token=f"tok{n}")
        )
        fake.tokens[c.token] = c.account_id
    connections_file = tmp_path / "connections.json"
    tokens.save(connections_file)
    data = tmp_path / "oauth" / "data"
    _video, image = make_media(data / "media" / "user-1" / "generation-1")  # user-1's stored output

    proc_box: dict[str, ServiceProcess] = {}
    creates = {"n": 0}
    killed_after_create: list[str] = []
    lock = threading.Lock()

    def on_create(post: FakePost) -> None:
        with lock:
            creates["n"] += 1
            if creates["n"] in KILLS_AFTER_CREATE:
                proc = proc_box["proc"].process
                if proc is not None and proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed_after_create.append(post.text)

    fake.on_create = on_create
    with LoopbackHTTPServer(fake.app()) as server:
        fake.base_url = server.url
        env = {
            **FAST,
            "POSTING_TEST_CONNECTIONS": str(connections_file),
            "OAUTH_PUBLISH_TWITTER_URL": server.url,
            "OAUTH_POSTING_WORKER_ID": "crash-test-worker",
            "OAUTH_POSTING_LEASE": "2",
            "OAUTH_POSTING_CONCURRENCY": "4",
            "OAUTH_PUBLISH_RECONCILE_GRACE": "2",
            "OAUTH_POSTING_RECONCILE_ATTEMPTS": "50",
            "OAUTH_PUBLISH_X_CHUNK_BYTES": "4096",
            "LOG_LEVEL": "WARNING",
        }
        proc = ServiceProcess(
            "oauth",
            tmp_path / "oauth",
            database_url=database_url,
            env=env,
            module="tests.oauth.posting.posting_process",
        )
        proc_box["proc"] = proc
        proc.start()

        def stub() -> posting_service_pb2_grpc.PostingServiceStub:
            return posting_service_pb2_grpc.PostingServiceStub(grpc.insecure_channel(proc.address))

        def ensure_running() -> None:
            assert proc.process is not None
            while proc.process.poll() is not None:
                with contextlib.suppress(RuntimeError):  # killed again (after a create) before it said SERVING
                    proc.start()

        random_kills = 0
        # Random kills at random points of the sequence (not on a clock: a fast machine would create all the
        # posts before the last kill came due).
        kill_after_post = set(rng.sample(range(5, POSTS - 5), 4))
        names: dict[int, str] = {}
        n = 0
        deadline = time.monotonic() + 240
        while n < POSTS:
            assert time.monotonic() < deadline, "could not create the posts"
            ensure_running()
            media = (
                [pb.Media(uri=image.as_uri(), kind=pb.MEDIA_KIND_IMAGE, content_type="image/png")] if n % 3 == 0 else []
            )
            request = pb.CreatePostRequest(
                post=pb.Post(connection=f"connections/x{n % ACCOUNTS}", text=f"crash post {n}", media=media),
                request_id=f"crash-{n}",
            )
            try:
                names[n] = stub().CreatePost(request, metadata=bearer(), timeout=5).post.name
                n += 1
            except grpc.RpcError:
                time.sleep(0.1)  # the service is down (killed): the same request_id again once it is back
                continue
            if n in kill_after_post:
                kill_after_post.discard(n)
                assert proc.process is not None
                if proc.process.poll() is None:
                    os.kill(proc.process.pid, signal.SIGKILL)
                    proc.process.wait()
                    random_kills += 1
                else:  # already down (killed after a create): kill after the next post instead
                    kill_after_post.add(n + 1)

        final: dict[int, pb.Post] = {}
        while time.monotonic() < deadline:
            ensure_running()
            try:
                final = {
                    i: stub().GetPost(pb.GetPostRequest(name=name), metadata=bearer(), timeout=5).post
                    for i, name in names.items()
                }
            except grpc.RpcError:
                time.sleep(0.2)
                continue
            pending = [
                p
                for p in final.values()
                if p.state not in (pb.POST_STATE_PUBLISHED, pb.POST_STATE_UNCONFIRMED)
                or (p.state == pb.POST_STATE_UNCONFIRMED and p.HasField("next_attempt_time"))
            ]
            if not pending:
                break
            time.sleep(0.3)
        proc.terminate()

    states = {i: pb.PostState.Name(p.state) for i, p in final.items()}
    assert len(final) == POSTS and set(states.values()) <= {"POST_STATE_PUBLISHED", "POST_STATE_UNCONFIRMED"}, states
    held: dict[str, list[FakePost]] = {}
    for delivered in fake.posts:
        held.setdefault(delivered.text, []).append(delivered)
    duplicates = {text: len(items) for text, items in held.items() if len(items) > 1}
    assert duplicates == {}, duplicates
    for i, post in final.items():
        if post.state == pb.POST_STATE_PUBLISHED:
            assert [p.id for p in held[f"crash post {i}"]] == [post.platform_post_id]
    assert len(killed_after_create) == len(KILLS_AFTER_CREATE), "the service was not killed after a create"
    assert random_kills == 4
    published = sum(p.state == pb.POST_STATE_PUBLISHED for p in final.values())
    assert published == POSTS, states  # X's timeline reconciles every unknown outcome
    for text in killed_after_create:
        assert len(held[text]) == 1
    assert "GET /2/users/{id}/tweets" in fake.calls  # unknown outcomes were reconciled, not re-sent
