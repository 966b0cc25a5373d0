"""Each service boots as `contentpipe-<svc> serve`, tells the truth on health, answers grpcurl, guards RPCs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.support import ServiceProcess, bearer, free_port
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.integration

SERVICES = {
    "generation": (["contentpipe.api.generation.v1.GenerationService"], "GetGeneration"),
    "oauth": (["contentpipe.api.oauth.v1.ConnectionService", "contentpipe.api.oauth.v1.PostingService"], "GetPost"),
    "pipelines": (["contentpipe.api.pipelines.v1.PipelineService"], "GetPipeline"),
    "scheduler": (
        ["contentpipe.api.scheduler.v1.NotificationService", "contentpipe.api.scheduler.v1.SchedulerService"],
        "GetJob",
    ),
}


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_serves_health_reflection_and_guards_rpcs(
    service: str, start_service: Callable[..., ServiceProcess]
) -> None:
    names, rpc = SERVICES[service]
    proc = start_service(service)
    listed = grpcurl("-plaintext", proc.address, "list").stdout.split()
    assert sorted(listed) == sorted([*names, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"])
    for name in ["", *names]:
        health = grpcurl("-plaintext", "-d", json.dumps({"service": name}), proc.address, "grpc.health.v1.Health/Check")
        assert json.loads(health.stdout) == {"status": "SERVING"}, health.stderr
    target = names[-1]  # the service that declares `rpc`
    described = grpcurl("-plaintext", proc.address, "describe", target)
    assert f"rpc {rpc} " in described.stdout
    # The contract's comments travel with reflection (descriptor_set.binpb), so describe documents each RPC.
    assert "// Returns one" in described.stdout, described.stdout
    message = grpcurl("-plaintext", proc.address, "describe", f"{target.rsplit('.', 1)[0]}.{rpc}Request")
    assert "//" in message.stdout, message.stdout
    method = f"{target}/{rpc}"
    unauthenticated = grpcurl("-plaintext", "-d", "{}", proc.address, method)
    assert "Code: Unauthenticated" in unauthenticated.stderr
    header = f"authorization: {dict(bearer())['authorization']}"
    answer = grpcurl("-plaintext", "-H", header, "-d", "{}", proc.address, method)
    # An empty request with a valid token is a real answer: refused for its missing name, or not implemented yet.
    assert "Code: Unknown" not in answer.stderr and "Code: Internal" not in answer.stderr
    assert any(f"Code: {code}" in answer.stderr for code in ("InvalidArgument", "NotFound", "Unimplemented")), (
        answer.stderr
    )
    assert proc.terminate() == 0


def test_service_on_postgresql_migrates_and_serves(
    postgres_url: str, start_service: Callable[..., ServiceProcess]
) -> None:
    for service in ("scheduler", "pipelines"):  # two services share one database, each its version table
        proc = start_service(service, database_url=postgres_url)
        assert proc.health() == 1
        assert proc.terminate() == 0


def test_missing_secret_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTENTPIPE_")}
    env["CONTENTPIPE_DATA_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "contentpipe.oauth", "serve"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "contentpipe-oauth: configuration error: CONTENTPIPE_JWT_SECRET or CONTENTPIPE_JWKS_URL: "
        "one is required to verify tokens (there is no built-in secret)"
    ]


def test_bad_port_is_named(tmp_path: Path) -> None:
    env = {**os.environ, "CONTENTPIPE_JWT_SECRET": "x" * 32, "SCHEDULER_GRPC_PORT": "abc"}
    result = subprocess.run(
        [sys.executable, "-m", "contentpipe.scheduler", "serve"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "SCHEDULER_GRPC_PORT: expected an integer 1-65535, got 'abc'" in result.stderr


def test_health_is_not_serving_until_the_database_is_reachable(tmp_path: Path) -> None:
    from tests.support import free_port

    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    proc = ServiceProcess("generation", tmp_path, database_url=unreachable).start(wait=False)
    try:
        status = None
        deadline = time.monotonic() + 60  # start-up under a loaded CI machine; the loop ends at the first answer
        while status is None and time.monotonic() < deadline:
            try:
                status = proc.health()
            except grpc.RpcError:
                time.sleep(0.1)
        assert status == 2  # NOT_SERVING: the server is up but not ready
        time.sleep(1)
        assert proc.health() == 2
    finally:
        assert proc.terminate() == 0


def _serve_once(service: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONTENTPIPE_", service.upper()))}
    return subprocess.run(
        [sys.executable, "-m", f"contentpipe.{service}", "serve"],
        cwd=REPO_ROOT,
        env={**base, "CONTENTPIPE_DATA_DIR": str(tmp_path), "CONTENTPIPE_JWT_SECRET": "x" * 32, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_port_already_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # The squatter sets SO_REUSEPORT like any gRPC server does; the service must still refuse to share it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = _serve_once("scheduler", tmp_path, SCHEDULER_GRPC_PORT=str(port), SCHEDULER_GRPC_HOST="127.0.0.1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"contentpipe-scheduler: configuration error: SCHEDULER_GRPC_PORT: cannot listen on 127.0.0.1:{port}: "
        "the port is already in use (another scheduler running?); stop that process or pick another port"
    ]


def test_short_jwt_secret_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _serve_once("generation", tmp_path, CONTENTPIPE_JWT_SECRET="short")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("contentpipe-generation: configuration error: CONTENTPIPE_JWT_SECRET: must be at least 32")


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_missing_postgresql_database_is_one_line_and_exit_2(command: str, postgres_url: str, tmp_path: Path) -> None:
    missing = postgres_url.rsplit("/", 1)[0] + "/contentpipe_does_not_exist"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONTENTPIPE_", "PIPELINES_"))}
    result = subprocess.run(
        [sys.executable, "-m", "contentpipe.pipelines", command],
        cwd=REPO_ROOT,
        env={
            **base,
            "CONTENTPIPE_DATA_DIR": str(tmp_path),
            "CONTENTPIPE_JWT_SECRET": "x" * 32,
            "PIPELINES_DATABASE_URL": missing,
            "PIPELINES_GRPC_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.strip().splitlines() if not line.startswith("{")]
    assert "database 'contentpipe_does_not_exist' does not exist on 127.0.0.1:5432: create it with" in line
    assert "createdb -h 127.0.0.1 -p 5432 -U postgres contentpipe_does_not_exist" in line
    assert "Traceback" not in result.stderr
