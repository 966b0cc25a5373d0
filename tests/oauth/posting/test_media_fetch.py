"""Media fetched at publish time: the URL policy again on every hop, redirects followed by us, non-2xx is no body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.http import create_http_client
from contentpipe.oauth.adapters.publishers.media import MAX_MEDIA_REDIRECTS, MediaFetcher, MediaPolicy
from contentpipe.oauth.domain.posts import Media, MediaKind
from contentpipe.oauth.service_layer.posting_ports import RejectedFailure, RetryableFailure
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes import LoopbackHTTPServer

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


class MediaHost:
    """A media server: /frame.png, redirects (/hop/{n} → /frame.png), /bare-302 (no Location), /to/{url}."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def app(self) -> Starlette:
        async def frame(request: Request) -> Response:
            self.paths.append(request.url.path)
            return Response(PNG, media_type="image/png")

        async def hop(request: Request) -> Response:
            self.paths.append(request.url.path)
            left = int(request.path_params["n"])
            return Response(status_code=302, headers={"location": f"/hop/{left - 1}" if left > 1 else "/frame.png"})

        async def bare(request: Request) -> Response:
            self.paths.append(request.url.path)
            return Response(b"<html>moved</html>", status_code=302, media_type="text/html")

        async def to(request: Request) -> Response:
            self.paths.append(request.url.path)
            return Response(status_code=307, headers={"location": request.query_params["url"]})

        return Starlette(
            routes=[
                Route("/frame.png", frame),
                Route("/hop/{n}", hop),
                Route("/bare-302", bare),
                Route("/to", to),
            ]
        )


class LoopbackOnlyPolicy(MediaPolicy):
    """The production policy, except that the literal 127.0.0.1 counts as public (the fake's address).

    Any other private name (here `localhost`, the same server) is refused by the real SSRF check.
    """

    def __init__(self) -> None:
        super().__init__(allow_private=False, file_roots=())

    async def check(self, uri: str, field: str, owner: str | None = None) -> None:
        if urlsplit(uri).hostname == "127.0.0.1":
            return
        await super().check(uri, field, owner)


@pytest.fixture
def host() -> Iterator[tuple[MediaHost, str]]:
    media_host = MediaHost()
    with LoopbackHTTPServer(media_host.app()) as server:
        yield media_host, server.url


async def fetch(policy: MediaPolicy, tmp_path: Path, url: str) -> bytes:
    client = create_http_client(timeout=httpx.Timeout(5.0))
    try:
        fetcher = MediaFetcher(client, policy, tmp_path / "scratch", max_bytes=1 << 20)
        async with fetcher.open(Media(uri=url, kind=MediaKind.IMAGE)) as local:
            return await local.read_all()
    finally:
        await client.aclose()


async def test_redirects_are_followed_hop_by_hop_to_the_media_body(host: tuple[MediaHost, str], tmp_path: Path) -> None:
    media_host, url = host
    body = await fetch(LoopbackOnlyPolicy(), tmp_path, f"{url}/hop/2")

    assert body == PNG
    assert media_host.paths == ["/hop/2", "/hop/1", "/frame.png"]


async def test_a_redirect_to_a_private_address_is_refused_before_it_is_requested(
    host: tuple[MediaHost, str], tmp_path: Path
) -> None:
    media_host, url = host
    port = urlsplit(url).port
    with pytest.raises(RejectedFailure) as refused:
        await fetch(LoopbackOnlyPolicy(), tmp_path, f"{url}/to?url=http://localhost:{port}/frame.png")

    assert refused.value.reason == "MEDIA_URL_REFUSED"
    assert media_host.paths == ["/to"]  # /frame.png via localhost was never fetched


async def test_a_redirect_to_a_file_uri_is_refused(host: tuple[MediaHost, str], tmp_path: Path) -> None:
    _, url = host
    secret = tmp_path / "frame.png"
    secret.write_bytes(PNG)
    with pytest.raises(RejectedFailure) as refused:
        await fetch(LoopbackOnlyPolicy(), tmp_path, f"{url}/to?url={secret.as_uri()}")

    assert refused.value.reason == "MEDIA_URL_REFUSED"


async def test_the_policy_is_checked_again_at_fetch_time(host: tuple[MediaHost, str], tmp_path: Path) -> None:
    # A URL that passed at CreatePost but now resolves to a private address (here: loopback, for real).
    media_host, url = host
    policy = MediaPolicy(allow_private=False, file_roots=())
    with pytest.raises(InvalidArgument):
        await policy.check(f"{url}/frame.png", "media")
    with pytest.raises(RejectedFailure) as refused:
        await fetch(policy, tmp_path, f"{url}/frame.png")

    assert refused.value.reason == "MEDIA_URL_REFUSED"
    assert media_host.paths == []


async def test_a_3xx_without_location_is_an_error_not_the_media(host: tuple[MediaHost, str], tmp_path: Path) -> None:
    _, url = host
    with pytest.raises(RejectedFailure) as failed:
        await fetch(LoopbackOnlyPolicy(), tmp_path, f"{url}/bare-302")

    assert failed.value.reason == "MEDIA_FETCH_FAILED" and "302" in str(failed.value)


async def test_too_many_redirects_fail(host: tuple[MediaHost, str], tmp_path: Path) -> None:
    media_host, url = host
    with pytest.raises(RejectedFailure):
        await fetch(LoopbackOnlyPolicy(), tmp_path, f"{url}/hop/{MAX_MEDIA_REDIRECTS + 1}")

    assert len(media_host.paths) == MAX_MEDIA_REDIRECTS + 1


async def test_a_host_that_no_longer_resolves_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(RetryableFailure):
        await fetch(MediaPolicy(allow_private=False, file_roots=()), tmp_path, "http://media.invalid/frame.png")
