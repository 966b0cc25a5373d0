"""Run a service (or any module) as a real subprocess, wait for gRPC health SERVING, stop with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.ports import free_port
from tests.support.tokens import TEST_JWT_SECRET

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """`contentpipe-<service> serve` on a free port with its data dir under `workdir`.

    Logs go to `workdir/<service>.log` (`.logs()` reads them; failures print them).
    """

    def __init__(
        self,
        service: str,
        workdir: Path,
        *,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        module: str | None = None,
        args: Sequence[str] = ("serve",),
    ) -> None:
        self.service = service
        self.workdir = workdir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = workdir / f"{service}-{self.port}.log"
        self.module = module or f"contentpipe.{service}"
        self.args = list(args)
        prefix = service.upper()
        self.env = {
            **os.environ,
            "CONTENTPIPE_DATA_DIR": str(workdir / "data"),
            "CONTENTPIPE_JWT_SECRET": TEST_JWT_SECRET,
            f"{prefix}_GRPC_PORT": str(self.port),
            f"{prefix}_GRPC_HOST": "127.0.0.1",
            "CONTENTPIPE_SHUTDOWN_GRACE_SECONDS": "5",
            "LOG_LEVEL": "INFO",
            **({f"{prefix}_DATABASE_URL": database_url} if database_url else {}),
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> ServiceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_serving(timeout=timeout)
        return self

    def channel(self) -> grpc.Channel:
        """A sync channel to the service: plaintext, or TLS trusting `CONTENTPIPE_TLS_CA_FILE` (presenting the
        client pair, else the service's own certificate, for mutual TLS) when the service serves TLS."""
        if not self.env.get("CONTENTPIPE_TLS_CERT_FILE"):
            return grpc.insecure_channel(self.address)
        cert = self.env.get("CONTENTPIPE_TLS_CLIENT_CERT_FILE") or self.env["CONTENTPIPE_TLS_CERT_FILE"]
        key = self.env.get("CONTENTPIPE_TLS_CLIENT_KEY_FILE") or self.env["CONTENTPIPE_TLS_KEY_FILE"]
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(self.env["CONTENTPIPE_TLS_CA_FILE"]).read_bytes(),
            private_key=Path(key).read_bytes(),
            certificate_chain=Path(cert).read_bytes(),
        )
        return grpc.secure_channel(self.address, credentials)

    def health(self, service: str = "", timeout: float = 1.0) -> int:
        with self.channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
            return int(response.status)

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.service} exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if self.health() == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.service} not SERVING after {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code (kills after `timeout`)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.terminate()
