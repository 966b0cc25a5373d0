"""WaitPost: a long poll that answers when the post's state changes, with GetPost's access rules."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpc
import pytest
from contentpipe.api.oauth.v1 import posting_service_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from tests.oauth.posting.harness import posting_stack
from tests.oauth.posting.test_api import tokens_for_all, violations
from tests.support import bearer

pytestmark = pytest.mark.integration


async def test_wait_post_answers_when_the_worker_publishes(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        post = await stack.create(connection="connections/outbox", text="hello")
        assert post.state == pb.POST_STATE_QUEUED
        # The wait starts while nothing publishes; the worker starts afterwards.
        request = pb.WaitPostRequest(name=post.name, timeout=Duration(seconds=30))

        async def wait() -> pb.WaitPostResponse:
            response: pb.WaitPostResponse = await stack.stub.WaitPost(request, metadata=bearer("user-1"), timeout=40)
            return response

        waiting = asyncio.create_task(wait())
        worker = asyncio.create_task(stack.app.worker.run())
        try:
            done = (await waiting).post
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        assert done.state == pb.POST_STATE_PUBLISHED
        assert done.name == post.name


async def test_wait_post_returns_the_post_as_it_is_at_its_bound(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        post = await stack.create(connection="connections/outbox", text="hello")
        request = pb.WaitPostRequest(name=post.name, state=pb.POST_STATE_QUEUED, timeout=Duration(nanos=200_000_000))
        still = (await stack.stub.WaitPost(request, metadata=bearer("user-1"), timeout=10)).post
        assert still.state == pb.POST_STATE_QUEUED
        # A state other than the one seen answers at once.
        request = pb.WaitPostRequest(name=post.name, state=pb.POST_STATE_PUBLISHING, timeout=Duration(seconds=30))
        assert (await stack.stub.WaitPost(request, metadata=bearer("user-1"), timeout=10)).post.state == (
            pb.POST_STATE_QUEUED
        )


async def test_wait_post_refuses_like_get_post(database_url: str, tmp_path: Path) -> None:
    async with posting_stack(database_url, tmp_path, tokens=tokens_for_all(), worker=False) as stack:
        post = await stack.create(connection="connections/outbox", text="hello")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.stub.WaitPost(pb.WaitPostRequest(name=post.name), metadata=bearer("user-2"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.stub.WaitPost(pb.WaitPostRequest(name=post.name), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as info:
            request = pb.WaitPostRequest(name=post.name, timeout=Duration(seconds=-1))
            await stack.stub.WaitPost(request, metadata=bearer("user-1"), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "timeout" in violations(info.value)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.stub.WaitPost(
                pb.WaitPostRequest(name=post.name, state=99),  # type: ignore[arg-type]
                metadata=bearer("user-1"),
                timeout=10,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "state" in violations(info.value)
