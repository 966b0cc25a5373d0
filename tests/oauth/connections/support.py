"""The oauth service on a real port with every platform faked on loopback (Google by a real OIDC provider)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import grpc
import httpx
from contentpipe.api.oauth.v1 import connection_service_pb2 as pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc, platform_pb2

from tests.fakes import LoopbackHTTPServer
from tests.fakes.oauth_platforms import FakePlatforms
from tests.fakes.oidc import OidcProvider
from tests.support import ServiceProcess, bearer
from tests.support.processes import REPO_ROOT

REDIRECT_URI = "https://app.contentpipe.test/oauth/callback"
KEY_1 = "k1:" + base64.b64encode(b"1" * 32).decode()
KEY_2 = "k2:" + base64.b64encode(b"2" * 32).decode()

PLATFORMS = {
    "instagram": platform_pb2.PLATFORM_INSTAGRAM,
    "twitter": platform_pb2.PLATFORM_TWITTER,
    "linkedin": platform_pb2.PLATFORM_LINKEDIN,
    "tiktok": platform_pb2.PLATFORM_TIKTOK,
    "google": platform_pb2.PLATFORM_GOOGLE,
    "facebook": platform_pb2.PLATFORM_FACEBOOK,
}


@dataclass
class Stack:
    service: ServiceProcess
    fakes: FakePlatforms
    oidc: OidcProvider
    database_url: str
    env: dict[str, str]

    def stub(self) -> tuple[grpc.aio.Channel, Any]:
        channel = grpc.aio.insecure_channel(self.service.address)
        return channel, connection_service_pb2_grpc.ConnectionServiceStub(channel)

    def issued_tokens(self) -> set[str]:
        return set(self.fakes.issued)


def start_stack(workdir: Path, database_url: str, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    fakes = FakePlatforms()
    with ExitStack() as stack:
        server = stack.enter_context(LoopbackHTTPServer(fakes.app()))
        oidc = stack.enter_context(OidcProvider("google-client", "google-secret", [REDIRECT_URI]))
        env = {
            **FakePlatforms.env(server.url),
            **oidc.env(),
            "OAUTH_TOKEN_KEYS": KEY_1,
            "OAUTH_REDIRECT_URIS": REDIRECT_URI,
            "LOG_LEVEL": "DEBUG",
            **(extra_env or {}),
        }
        service = ServiceProcess("oauth", workdir, database_url=database_url, env=env).start()
        try:
            yield Stack(service, fakes, oidc, database_url, env)
        finally:
            service.terminate()


def consent(authorization_uri: str) -> tuple[str, str]:
    """Play the user at the platform: follow redirects (with cookies) until the redirect back; (code, state)."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        url = authorization_uri
        for _ in range(10):
            if url.startswith(REDIRECT_URI):
                query = parse_qs(urlsplit(url).query)
                assert "error" not in query, query
                return query["code"][0], query["state"][0]
            response = browser.get(url)
            assert response.status_code in (302, 303), (response.status_code, response.text[:500])
            url = urljoin(url, response.headers["location"])
    raise AssertionError("no redirect back to the app")


def query_of(uri: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(uri).query).items()}


async def connect(stub: Any, platform: str, user: str = "user-1") -> pb.Connection:
    started = await stub.StartConnection(
        pb.StartConnectionRequest(platform=PLATFORMS[platform], redirect_uri=REDIRECT_URI), metadata=bearer(user)
    )
    code, state = consent(started.authorization_uri)
    done = await stub.CompleteConnection(
        pb.CompleteConnectionRequest(platform=PLATFORMS[platform], code=code, state=state), metadata=bearer(user)
    )
    connection: pb.Connection = done.connection
    return connection


def error_reason(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def database_dump(database_url: str, *, raw: bool = True) -> str:
    """What the database holds for oauth's tables, as text: with `raw` on SQLite every byte of the file and its
    WAL (stale pages included), else the rows as SELECT returns them."""
    if raw and database_url.startswith("sqlite"):
        path = Path(database_url.split("///", 1)[1])
        return "".join(p.read_bytes().decode("latin-1") for p in path.parent.glob(path.name + "*"))
    script = (
        "import asyncio, sys\n"
        "import sqlalchemy as sa\n"
        "from contentpipe.common.database import create_engine\n"
        "async def main():\n"
        "    engine = create_engine(sys.argv[1])\n"
        "    async with engine.connect() as c:\n"
        "        for t in ('connections', 'authorization_states'):\n"
        "            for row in (await c.execute(sa.text(f'SELECT * FROM {t}'))).all():\n"
        "                print(row)\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, database_url], capture_output=True, check=True, cwd=REPO_ROOT, env=os.environ
    )
    return out.stdout.decode()


def assert_no_tokens(text: str, tokens: set[str], where: str) -> None:
    leaked = [t for t in tokens if t in text]
    assert not leaked, f"{len(leaked)} token(s) in clear in {where}, e.g. {leaked[0][:12]}…"
