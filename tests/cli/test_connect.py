"""`contentpipe connections connect`: outbox at once; other platforms through the loopback redirect listener."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import httpx
import pytest
from contentpipe.api.oauth.v1 import connection_service_pb2 as pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc as pb_grpc
from contentpipe.api.oauth.v1 import platform_pb2

from tests.cli.harness import REPO_ROOT, cli_environ
from tests.support import free_port

pytestmark = pytest.mark.integration


class FakeConnections(pb_grpc.ConnectionServiceServicer):
    def __init__(self) -> None:
        self.started: list[pb.StartConnectionRequest] = []
        self.completed: list[pb.CompleteConnectionRequest] = []

    def StartConnection(
        self, request: pb.StartConnectionRequest, context: grpc.ServicerContext
    ) -> pb.StartConnectionResponse:
        self.started.append(request)
        uri = f"https://platform.invalid/authorize?client_id=c&state=state-1&redirect_uri={request.redirect_uri}"
        return pb.StartConnectionResponse(authorization_uri=uri, state="state-1")

    def CompleteConnection(
        self, request: pb.CompleteConnectionRequest, context: grpc.ServicerContext
    ) -> pb.CompleteConnectionResponse:
        self.completed.append(request)
        connection = pb.Connection(
            name="connections/c1",
            platform=request.platform,
            status=pb.CONNECTION_STATUS_ACTIVE,
            profile=pb.Profile(username="alice"),
        )
        return pb.CompleteConnectionResponse(connection=connection)


@pytest.fixture
def connections(fake_server, token: str) -> tuple[FakeConnections, dict[str, str]]:
    servicer = FakeConnections()  # type: ignore[abstract]
    address = fake_server((servicer, pb_grpc.add_ConnectionServiceServicer_to_server))
    return servicer, {"CONTENTPIPE_OAUTH_ADDR": address, "CONTENTPIPE_TOKEN": token}


def _connect(env: dict[str, str], platform: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "contentpipe.cli", "connections", "connect", platform, "--no-browser", *extra],
        cwd=REPO_ROOT,
        env=cli_environ(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_outbox_connects_without_authorization(run_cli, connections) -> None:
    servicer, env = connections
    result = run_cli("connections", "connect", "outbox", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["platform"] == "OUTBOX"
    assert servicer.started == []
    assert [(c.platform, c.code, c.state) for c in servicer.completed] == [(platform_pb2.PLATFORM_OUTBOX, "", "")]


def test_the_redirect_to_the_loopback_listener_completes_the_connection(connections) -> None:
    servicer, env = connections
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    process = _connect(env, "linkedin", "--redirect-uri", redirect, "-o", "json")
    assert process.stdout is not None
    authorization_uri = process.stdout.readline().strip()
    assert authorization_uri.startswith("https://platform.invalid/authorize?")
    # The user approves; the platform sends the browser back to the listener.
    response = httpx.get(f"{redirect}?code=code-1&state=state-1", timeout=10)
    assert response.status_code == 200
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert json.loads(out)["profile"]["username"] == "alice"
    assert [(s.platform, s.redirect_uri) for s in servicer.started] == [(platform_pb2.PLATFORM_LINKEDIN, redirect)]
    assert [(c.code, c.state) for c in servicer.completed] == [("code-1", "state-1")]


def test_a_redirect_with_a_foreign_state_is_refused(connections) -> None:
    servicer, env = connections
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    process = _connect(env, "x", "--redirect-uri", redirect)
    assert process.stdout is not None
    process.stdout.readline()
    httpx.get(f"{redirect}?code=code-1&state=forged", timeout=10)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "state does not match" in err
    assert servicer.completed == []


def test_a_refusal_at_the_platform_is_reported(connections) -> None:
    servicer, env = connections
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    process = _connect(env, "tiktok", "--redirect-uri", redirect)
    assert process.stdout is not None
    process.stdout.readline()
    httpx.get(f"{redirect}?error=access_denied&error_description=no&state=state-1", timeout=10)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "refused the authorization: access_denied no" in err
    assert servicer.completed == []
