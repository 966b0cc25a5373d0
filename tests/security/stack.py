"""The four services as real processes wired to each other (and to loopback fakes), for the security suites."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import grpc
from contentpipe.common.channels import ServiceToken

from tests.security.catalog import SERVICE_PROCESSES
from tests.support import TEST_JWT_SECRET, ServiceProcess, mint_token

SERVING = 1
# Every stack started in this session, for the end-of-session secrets scan.
STACKS: list[Stack] = []


class Stack:
    """generation, oauth, pipelines and scheduler on free ports, each knowing the others' addresses."""

    def __init__(
        self,
        workdir: Path,
        *,
        database_urls: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        services: tuple[str, ...] = SERVICE_PROCESSES,
    ) -> None:
        self.workdir = workdir
        self.backend = "sqlite" if not database_urls else "postgresql"
        self.procs: dict[str, ServiceProcess] = {
            name: ServiceProcess(name, workdir / name, database_url=(database_urls or {}).get(name), env=env)
            for name in services
        }
        peers = {f"CONTENTPIPE_{name.upper()}_ADDR": proc.address for name, proc in self.procs.items()}
        for proc in self.procs.values():
            proc.env.update(peers)
            # Fakes listen on 127.0.0.1: the deployment switch that lets user URLs reach them stays explicit.
            proc.env.update(env or {})
        self._channels: dict[str, grpc.Channel] = {}
        STACKS.append(self)
        # Every error message a client saw from this stack (the secrets scan reads them).
        self.observed_errors: list[str] = []

    def observe(self, details: str | None) -> None:
        if details:
            self.observed_errors.append(details)

    def start(self, timeout: float = 60.0) -> Stack:
        for proc in self.procs.values():
            proc.start(wait=False)
        for proc in self.procs.values():
            proc.wait_serving(timeout=timeout)
        return self

    def channel(self, process: str) -> grpc.Channel:
        if process not in self._channels:
            self._channels[process] = grpc.insecure_channel(self.procs[process].address)
        return self._channels[process]

    def healthy(self) -> dict[str, bool]:
        result = {}
        for name, proc in self.procs.items():
            try:
                result[name] = proc.process is not None and proc.process.poll() is None and proc.health() == SERVING
            except grpc.RpcError:
                result[name] = False
        return result

    def logs(self) -> str:
        return "\n".join(proc.logs() for proc in self.procs.values())

    def stop(self, timeout: float = 20.0) -> dict[str, int]:
        """SIGTERM every process at once (shutdown grace runs in parallel), then wait."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        for proc in self.procs.values():
            if proc.process is not None and proc.process.poll() is None:
                proc.process.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            if proc.process is None:
                continue
            try:
                proc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()
            codes[name] = int(proc.process.returncode)
        return codes


@contextmanager
def running_stack(workdir: Path, **kwargs: object) -> Iterator[Stack]:
    stack = Stack(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield stack.start()
    finally:
        stack.stop()


def user_metadata(user_id: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_token(TEST_JWT_SECRET, user_id)}"),)


def service_metadata(user_id: str, service: str = "pipelines") -> tuple[tuple[str, str], ...]:
    """What a peer service sends when it acts for `user_id` (the real ServiceToken helper)."""
    return ServiceToken(TEST_JWT_SECRET, service).peer_call_metadata(user_id)


def data_dirs(stack: Stack) -> list[Path]:
    return [proc.workdir for proc in stack.procs.values()]


def env_flag(name: str, default: str = "") -> str:
    return os.environ.get(name, default)
