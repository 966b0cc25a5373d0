"""The local stack behind `contentpipe up/down/status`: the four services as supervised subprocesses.

Each service runs as `python -m contentpipe.<service> serve` in its own session (so a terminal's Ctrl-C reaches only
the CLI, which then stops them in order), logs to `<data dir>/logs/<service>.log`, and is recorded with its pid,
port and database URL in `<data dir>/stack.json` so later commands find it (and `down` can stop it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
from contentpipe.cli.config import DEFAULT_PORTS, SECRET_FILE, SERVICES
from grpc_health.v1 import health_pb2, health_pb2_grpc

HEALTH_SERVING = "SERVING"
HEALTH_UNREACHABLE = "UNREACHABLE"

# Embedded defaults for a laptop: everything offline and under the data dir. Only set when the environment does
# not already say otherwise, so `GENERATION_DEFAULT_PROVIDER=replicate contentpipe up` works as expected.
# Workers poll a little faster than in production so a laptop run feels immediate; the work itself is the same.
EMBEDDED_DEFAULTS: Mapping[str, Mapping[str, str]] = {
    "generation": {
        "GENERATION_DEFAULT_PROVIDER": "local",
        "GENERATION_STORAGE_BACKEND": "local",
        "GENERATION_WORKER_POLL_INTERVAL": "0.2s",
    },
    "oauth": {"OAUTH_POSTING_POLL_INTERVAL": "0.2s"},
    "pipelines": {
        "PIPELINES_CLAIM_INTERVAL_SECONDS": "0.2",
        "PIPELINES_POLL_INITIAL_SECONDS": "0.2",
        "PIPELINES_POLL_MAX_SECONDS": "2",
    },
    "scheduler": {"SCHEDULER_PROCESS_INTERVAL": "2s"},
}


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    service: str
    pid: int
    port: int
    address: str
    log: str
    database_url: str


@dataclass(frozen=True, slots=True)
class StackState:
    data_dir: str
    started_at: str
    supervisor_pid: int | None
    services: dict[str, ServiceInfo] = field(default_factory=dict)


def read_state(path: Path) -> StackState | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        services = {name: ServiceInfo(**info) for name, info in raw["services"].items()}
        return StackState(raw["data_dir"], raw["started_at"], raw.get("supervisor_pid"), services)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(path: Path, state: StackState) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def ensure_secret(data_dir: Path) -> str:
    """The stack's JWT secret: random on first start, kept in the data dir, readable by the owner only."""
    path = data_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path.read_text(encoding="utf-8").strip()
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose_ports(mode: str, base: int | None, environ: Mapping[str, str]) -> dict[str, int]:
    """`auto`: free ports; `--port-base N`: N..N+3; else CONTENTPIPE_<SVC>_ADDR's port or the default port."""
    if mode == "auto":
        return {svc: free_port() for svc in SERVICES}
    if base is not None:
        return {svc: base + index for index, svc in enumerate(SERVICES)}
    ports: dict[str, int] = {}
    for svc in SERVICES:
        address = environ.get(f"CONTENTPIPE_{svc.upper()}_ADDR", "")
        port = address.rpartition(":")[2]
        ports[svc] = int(port) if port.isdigit() else DEFAULT_PORTS[svc]
    return ports


def database_url(svc: str, data_dir: Path, environ: Mapping[str, str]) -> str:
    return environ.get(f"{svc.upper()}_DATABASE_URL") or f"sqlite+aiosqlite:///{(data_dir / f'{svc}.db').as_posix()}"


def service_environ(
    svc: str, data_dir: Path, secret: str, ports: Mapping[str, int], environ: Mapping[str, str]
) -> dict[str, str]:
    env = dict(environ)
    for name, value in EMBEDDED_DEFAULTS[svc].items():
        env.setdefault(name, value.replace("{data_dir}", str(data_dir)))
    env.update(
        {
            "CONTENTPIPE_DATA_DIR": str(data_dir),
            "CONTENTPIPE_JWT_SECRET": secret,
            f"{svc.upper()}_GRPC_HOST": "127.0.0.1",
            f"{svc.upper()}_GRPC_PORT": str(ports[svc]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    for peer in SERVICES:
        env[f"CONTENTPIPE_{peer.upper()}_ADDR"] = f"127.0.0.1:{ports[peer]}"
    env.pop("CONTENTPIPE_TOKEN", None)
    return env


def spawn(svc: str, data_dir: Path, env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = data_dir / "logs" / f"{svc}.log"
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", f"contentpipe.{svc}", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # Ctrl-C reaches the CLI only; it stops the services in order
        )
    return process, log_path


async def health(address: str, deadline: float = 1.0) -> str:
    """The standard gRPC health answer for the whole server, or UNREACHABLE."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=deadline
            )
        except grpc.aio.AioRpcError:
            return HEALTH_UNREACHABLE
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


async def answers(channel: grpc.aio.Channel, deadline: float = 1.0) -> bool:
    """Whether a gRPC server listens behind `channel` at all (any answer but UNAVAILABLE/DEADLINE_EXCEEDED counts)."""
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline)
    except grpc.aio.AioRpcError as err:
        return err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); /proc tells the truth on Linux.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def pid_runs(pid: int, needle: str) -> bool:
    """Whether `pid` is alive and its command line mentions `needle` (guards against reused pids)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc (macOS): trust the recorded pid
    return needle in cmdline


def signal_group(pid: int, signum: int) -> None:
    """Signal the service's process group (it leads its own session), so helper processes go too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


async def stop_pids(pids: Sequence[int], *, grace: float) -> list[int]:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL what is left; returns the pids that had to be killed."""
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline and any(pid_alive(pid) for pid in pids):
        _reap()
        await asyncio.sleep(0.1)
    killed = [pid for pid in pids if pid_alive(pid)]
    for pid in killed:
        signal_group(pid, signal.SIGKILL)
    _reap()
    return killed


def _reap() -> None:
    """Collect exited children of this process so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def tail(path: Path, lines: int = 15) -> str:
    try:
        content = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(content[-lines:])
