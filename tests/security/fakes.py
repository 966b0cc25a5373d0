"""Loopback stand-ins for every external API the services call, recording each request they receive.

The services' own fakes (tests/fakes) follow each API's contract; this recorder sits behind the endpoints the
security suites do not exercise in depth, so that nothing ever leaves the machine and every outbound request
(URL, headers, body) can be inspected for secrets and for the outbound URL policy.
"""

from __future__ import annotations

import base64
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes import LoopbackHTTPServer
from tests.fakes.oauth_platforms import CLIENTS, FakePlatforms
from tests.fakes.oidc import OidcProvider

# Where the platforms send the user back (on the oauth service's allowlist in the stacks).
REDIRECT_URI = "https://app.contentpipe.test/oauth/callback"
TOKEN_KEYS = f"sec1:{base64.b64encode(secrets.token_bytes(32)).decode()}"

GOOGLE_CLIENT_SECRET = f"google-secret-{secrets.token_hex(12)}"
# Secrets the stack is configured with: none may ever appear in a log line, an error message or a database.
SECRETS = {
    "REPLICATE_API_TOKEN": f"r8_{secrets.token_hex(16)}",
    "REPLICATE_WEBHOOK_SECRET": f"whsec_{secrets.token_hex(16)}",
    "NOTIFICATION_WEBHOOK_SECRET": f"notify-secret-{secrets.token_hex(12)}",
    "S3_SECRET_ACCESS_KEY": f"s3-secret-{secrets.token_hex(12)}",
    "OAUTH_STATE_SECRET": f"state-secret-{secrets.token_hex(16)}",
    "OAUTH_TOKEN_KEYS": TOKEN_KEYS,
    **{f"{name.upper()}_CLIENT_SECRET": secret for name, (_, secret) in CLIENTS.items()},
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RequestRecorder:
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def record(request: Request) -> JSONResponse:
            body = await request.body()
            with self.lock:
                self.requests.append(
                    RecordedRequest(request.method, request.url.path, request.url.query, dict(request.headers), body)
                )
            return JSONResponse({"error": "recorded by the security suite's loopback fake"}, status_code=503)

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
        return Starlette(routes=[Route("/{path:path}", record, methods=methods)])


class ExternalFakes:
    """Every external base URL of the stack points here; `recorder.requests` says what reached it."""

    def __init__(self, *, google: bool = False) -> None:
        self.recorder = RequestRecorder()
        self._server = LoopbackHTTPServer(self.recorder.app())
        # The platforms' OAuth endpoints (tests/fakes): `platforms.issued` holds every token they handed out.
        self.platforms = FakePlatforms()
        self._platform_server = LoopbackHTTPServer(self.platforms.app())
        # Google (YouTube) signs in through a real OpenID Connect provider (node), started only when asked for.
        self.google = OidcProvider("google-client", GOOGLE_CLIENT_SECRET, [REDIRECT_URI]) if google else None

    @property
    def url(self) -> str:
        return self._server.url

    def service_env(self, workdir: Path) -> dict[str, str]:
        return {
            "CONTENTPIPE_ALLOW_PRIVATE_URLS": "0",
            "GENERATION_DEFAULT_PROVIDER": "local",
            "REPLICATE_BASE_URL": self.url,
            **FakePlatforms.env(self._platform_server.url),
            "OAUTH_REDIRECT_URIS": REDIRECT_URI,
            **SECRETS,
            **(self.google.env() if self.google is not None else {}),
        }

    def __enter__(self) -> ExternalFakes:
        if self.google is not None:
            self.google.__enter__()
        self._server.start()
        self._platform_server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._platform_server.stop()
        self._server.stop()
        if self.google is not None:
            self.google.__exit__()
