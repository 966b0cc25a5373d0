"""User-supplied URLs (input images, media, redirect URIs) may only reach public http(s) addresses.

The policy (`contentpipe.common.http.OutboundUrlPolicy`) is pinned directly, then each service's use of it is
exercised through its RPCs on the stack, which runs with CONTENTPIPE_ALLOW_PRIVATE_URLS=0.
"""

from __future__ import annotations

import uuid

import grpc
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as gen
from contentpipe.api.oauth.v1 import connection_service_pb2 as conn
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.oauth.v1 import posting_service_pb2 as posting
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.http import OutboundUrlPolicy
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.security.stack import Stack, user_metadata
from tests.security.tenants import invoke

pytestmark = pytest.mark.integration

REFUSED = [
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "ftp://example.com/a.png",
    "data:image/png;base64,AAAA",
    "javascript:alert(1)",
    "http:///no-host",
    "http://127.0.0.1/a.png",
    "http://127.1/a.png",
    "http://2130706433/a.png",  # 127.0.0.1 as one integer
    "http://0x7f000001/a.png",
    "http://localhost:8080/a.png",  # a name that resolves to loopback
    "http://[::1]/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://0.0.0.0/a.png",
    "http://10.1.2.3/a.png",
    "http://172.16.0.1/a.png",
    "http://192.168.1.1/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/a.png",
    "http://[fd00::1]/a.png",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud metadata, in 100.64.0.0/10 (shared, not global)
    "http://100.64.0.1/a.png",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 form of 169.254.169.254
    "http://example.com:99999/a.png",  # port out of range
    "http://[not-an-ip]/a.png",
    "http://host-that-does-not-exist.invalid/a.png",
]
PUBLIC = ["https://93.184.216.34/a.png", "http://8.8.8.8/a.png", "https://[2606:4700:4700::1111]/a.png"]


@pytest.mark.parametrize("url", REFUSED)
async def test_policy_refuses_non_http_private_local_and_metadata_urls(url: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await OutboundUrlPolicy(field="generation.options.input_image_uri").check(url)
    assert [v.field for v in raised.value.violations] == ["generation.options.input_image_uri"]


@pytest.mark.parametrize("url", PUBLIC)
async def test_policy_lets_public_http_addresses_through(url: str) -> None:
    await OutboundUrlPolicy().check(url)


async def test_allow_private_lets_loopback_through_but_never_other_schemes() -> None:
    policy = OutboundUrlPolicy(allow_private=True, field="url")
    await policy.check("http://127.0.0.1:8080/a.png")
    for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "http:///x"):
        with pytest.raises(InvalidArgument):
            await policy.check(url)


def field_violations(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


def refused_with_field(stack: Stack, method: str, request: object, field: str) -> str | None:
    """None when the RPC answers INVALID_ARGUMENT naming `field`; else what happened."""
    try:
        invoke(stack, method, request, user_metadata("url-user"))  # type: ignore[arg-type]
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.INVALID_ARGUMENT and any(f.startswith(field) for f in field_violations(err)):
            return None
        return f"{err.code().name} {err.details()!r} {field_violations(err)}"
    return "OK (accepted)"


SERVICE_URLS = [u for u in REFUSED if "does-not-exist" not in u]


def test_generation_refuses_private_input_image_uris(stack: Stack) -> None:
    accepted = {}
    for url in SERVICE_URLS:
        request = gen.CreateGenerationRequest(
            generation=gen.Generation(
                kind=gen.GENERATION_KIND_VIDEO, prompt="a cat", options=gen.GenerationOptions(input_image_uri=url)
            ),
            request_id=str(uuid.uuid4()),
        )
        if (
            outcome := refused_with_field(stack, "CreateGeneration", request, "generation.options.input_image_uri")
        ) is not None:
            accepted[url] = outcome
    assert not accepted, accepted


def test_posting_refuses_private_media_uris(stack: Stack) -> None:
    connection = invoke(
        stack,
        "CompleteConnection",
        conn.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX),
        user_metadata("url-user"),
    ).connection.name
    accepted = {}
    for url in SERVICE_URLS:
        request = posting.CreatePostRequest(
            post=posting.Post(
                connection=connection,
                text="hello",
                media=[posting.Media(uri=url, kind=posting.MEDIA_KIND_IMAGE, content_type="image/png")],
            ),
            request_id=str(uuid.uuid4()),
        )
        if (outcome := refused_with_field(stack, "CreatePost", request, "post.media")) is not None:
            accepted[url] = outcome
    assert not accepted, accepted


def test_oauth_refuses_redirect_uris_off_the_allowlist(stack: Stack) -> None:
    accepted = {}
    for url in [*SERVICE_URLS, "https://evil.example/callback", "https://contentpipe.test.evil.example/cb"]:
        for platform in (platform_pb2.PLATFORM_TWITTER, platform_pb2.PLATFORM_LINKEDIN):
            request = conn.StartConnectionRequest(platform=platform, redirect_uri=url)
            outcome = refused_with_field(stack, "StartConnection", request, "redirect_uri")
            if outcome is not None and not outcome.startswith("FAILED_PRECONDITION"):  # platform not configured
                accepted[(url, platform)] = outcome
    assert not accepted, accepted
