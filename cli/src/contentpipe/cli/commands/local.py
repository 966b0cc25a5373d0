"""`contentpipe up`, `down`, `status` and `token`: the local stack and its credentials."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from contentpipe.cli import stack
from contentpipe.cli.config import SERVICES
from contentpipe.cli.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PRECONDITION,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
)
from contentpipe.cli.output import Column, col, dump, print_table
from contentpipe.cli.parsing import SubParsers, add_command
from contentpipe.cli.session import Session, read_secret
from contentpipe.common.auth import mint_token

STOP_GRACE_SECONDS = 15.0


def register(sub: SubParsers) -> None:
    up = add_command(
        sub,
        "up",
        help="start the four services locally (SQLite, local storage, local generation, outbox)",
        handler=up_command,
        description=(
            "Start generation, oauth, pipelines and scheduler as local processes on embedded defaults: SQLite\n"
            "databases, files and logs under the data dir, the offline `local` generation provider and the\n"
            "`outbox` platform. A random JWT secret is created in the data dir on first start. Without --detach\n"
            "the command stays in the foreground and Ctrl-C stops everything."
        ),
        examples=[
            "contentpipe up                      # foreground; Ctrl-C stops the services",
            "contentpipe up --detach             # background; stop with `contentpipe down`",
            "contentpipe up --detach --ports auto --data-dir /tmp/cp   # free ports, another data dir",
        ],
    )
    up.add_argument("--detach", "-d", action="store_true", help="start in the background and return")
    up.add_argument(
        "--ports",
        choices=("default", "auto"),
        default="default",
        help="default: 50051-50054 (or the ports in CONTENTPIPE_<SERVICE>_ADDR); auto: free ports",
    )
    up.add_argument(
        "--port-base", type=int, help="use PORT_BASE..PORT_BASE+3 (generation, oauth, pipelines, scheduler)"
    )
    up.add_argument("--wait-timeout", type=float, default=90.0, help="seconds to wait for health (default 90)")

    add_command(
        sub,
        "down",
        help="stop the services started by `contentpipe up`",
        handler=down_command,
        examples=["contentpipe down", "contentpipe --data-dir /tmp/cp down"],
    )
    add_command(
        sub,
        "status",
        help="show the local services: pids, ports, health, database URLs, logs",
        handler=status_command,
        reads=True,
        examples=["contentpipe status", "contentpipe status -o json"],
    )
    token = add_command(
        sub,
        "token",
        help="mint a bearer token (HS256) for a user",
        handler=token_command,
        description=(
            "Mint a JWT for USER signed with the local stack's secret (<data dir>/jwt-secret), --secret or\n"
            "CONTENTPIPE_JWT_SECRET. Print it, or export it for other tools (grpcurl)."
        ),
        examples=[
            "contentpipe token --user alice",
            'export CONTENTPIPE_TOKEN="$(contentpipe token --user alice)"',
            'contentpipe token --user bob --secret "$CONTENTPIPE_JWT_SECRET" --ttl 600',
        ],
    )
    token.add_argument("--user", required=True, help="the user id (JWT `sub`)")
    token.add_argument("--secret", help="HS256 secret (default: the data dir's, then CONTENTPIPE_JWT_SECRET)")
    token.add_argument("--ttl", type=float, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--role", default="authenticated", help="the `role` claim (default authenticated)")


async def token_command(session: Session, args: argparse.Namespace) -> int:
    secret = args.secret or read_secret(session.config) or os.environ.get("CONTENTPIPE_JWT_SECRET")
    if not secret:
        raise CliError(
            f"no secret: {session.config.secret_path} does not exist",
            EXIT_USAGE,
            hint="start the services with `contentpipe up`, or pass --secret / set CONTENTPIPE_JWT_SECRET",
        )
    print(mint_token(secret, args.user, role=args.role, ttl_seconds=args.ttl))
    return EXIT_OK


def _running_state(session: Session) -> stack.StackState | None:
    state = stack.read_state(session.config.state_path)
    if state is None:
        return None
    alive = any(stack.pid_runs(info.pid, f"contentpipe.{svc}") for svc, info in state.services.items())
    return state if alive else None


async def up_command(session: Session, args: argparse.Namespace) -> int:
    data_dir = session.config.data_dir.resolve()
    if _running_state(session) is not None:
        raise CliError(
            f"services are already running for {data_dir}",
            EXIT_PRECONDITION,
            hint="`contentpipe status` shows them; `contentpipe down` stops them",
        )
    (data_dir / "logs").mkdir(parents=True, exist_ok=True)
    secret = stack.ensure_secret(data_dir)
    environ = dict(os.environ)
    ports = stack.choose_ports(args.ports, args.port_base, environ)
    busy = [f"{svc} :{port}" for svc, port in ports.items() if not _port_free(port)]
    if busy:
        raise CliError(
            f"ports in use: {', '.join(busy)}",
            EXIT_PRECONDITION,
            hint="another contentpipe may be running (`contentpipe status`); or use --ports auto",
        )
    # From the first spawn on, Ctrl-C/SIGTERM must stop what was started, whatever the phase (the services run in
    # their own sessions, so the terminal's signal reaches only this process).
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await _start(data_dir, args, stop, secret=secret, ports=ports, environ=environ)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _start(
    data_dir: Path,
    args: argparse.Namespace,
    stop: asyncio.Event,
    *,
    secret: str,
    ports: dict[str, int],
    environ: dict[str, str],
) -> int:
    processes: dict[str, Any] = {}
    infos: dict[str, stack.ServiceInfo] = {}
    for svc in SERVICES:
        env = stack.service_environ(svc, data_dir, secret, ports, environ)
        process, log_path = stack.spawn(svc, data_dir, env)
        processes[svc] = process
        infos[svc] = stack.ServiceInfo(
            service=svc,
            pid=process.pid,
            port=ports[svc],
            address=f"127.0.0.1:{ports[svc]}",
            log=str(log_path),
            database_url=stack.database_url(svc, data_dir, environ),
        )
    state = stack.StackState(
        data_dir=str(data_dir),
        started_at=stack.now_iso(),
        supervisor_pid=None if args.detach else os.getpid(),
        services=infos,
    )
    stack.write_state(data_dir / "stack.json", state)
    _say(f"starting 4 services in {data_dir} (logs in {data_dir / 'logs'}) ...")
    problem = await _wait_healthy(infos, processes, args.wait_timeout, stop)
    if stop.is_set() or problem is not None:
        await stack.stop_pids([info.pid for info in infos.values()], grace=STOP_GRACE_SECONDS)
        with contextlib.suppress(FileNotFoundError):
            (data_dir / "stack.json").unlink()
        if problem is None:
            _say("interrupted; stopped the services")
            return EXIT_INTERRUPTED
        svc, why = problem
        log_tail = stack.tail(Path(infos[svc].log))
        raise CliError(
            f"{svc} did not start: {why}\n--- last lines of {infos[svc].log} ---\n{log_tail}",
            EXIT_UNAVAILABLE,
        )
    await _print_status(state, "table")
    if args.detach:
        _say("services running in the background; stop them with `contentpipe down`")
        return EXIT_OK
    _say("services running; press Ctrl-C to stop")
    return await _supervise(data_dir, infos, processes, stop)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _wait_healthy(
    infos: dict[str, stack.ServiceInfo], processes: dict[str, Any], wait_seconds: float, stop: asyncio.Event
) -> tuple[str, str] | None:
    """None once every service is SERVING (or when `stop` is set); else the first service that failed, and why."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    pending = set(infos)
    while pending and not stop.is_set():
        for svc in sorted(pending):
            code = processes[svc].poll()
            if code is not None:
                return svc, f"exited with code {code}"
        results = await asyncio.gather(*(stack.health(infos[svc].address, 0.5) for svc in sorted(pending)))
        for svc, status in zip(sorted(pending), results, strict=True):
            if status == stack.HEALTH_SERVING:
                pending.discard(svc)
        if not pending:
            return None
        if loop.time() > deadline:
            svc = sorted(pending)[0]
            return svc, f"not healthy after {wait_seconds:.0f} s"
        await asyncio.sleep(0.2)
    return None


async def _supervise(
    data_dir: Path, infos: dict[str, stack.ServiceInfo], processes: dict[str, Any], stop: asyncio.Event
) -> int:
    """Wait for Ctrl-C/SIGTERM (or a service dying), then stop every service in order."""
    died: str | None = None
    while not stop.is_set():
        for svc, process in processes.items():
            if process.poll() is not None:
                died = svc
                stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
    _say("\nstopping services ...")
    killed = await stack.stop_pids([info.pid for info in infos.values()], grace=STOP_GRACE_SECONDS)
    for process in processes.values():
        with contextlib.suppress(Exception):
            process.wait(timeout=0)
    with contextlib.suppress(FileNotFoundError):
        (data_dir / "stack.json").unlink()
    if killed:
        _say(f"killed after {STOP_GRACE_SECONDS:.0f} s: {', '.join(map(str, killed))}")
    if died is not None:
        _say(f"{died} exited unexpectedly; see {infos[died].log}")
        return EXIT_FAILED
    _say("stopped")
    return EXIT_OK


async def down_command(session: Session, args: argparse.Namespace) -> int:
    state = stack.read_state(session.config.state_path)
    if state is None:
        _say(f"no services recorded in {session.config.data_dir}; nothing to stop")
        return EXIT_OK
    supervisor = state.supervisor_pid
    if supervisor and supervisor != os.getpid() and stack.pid_runs(supervisor, "contentpipe"):
        # A foreground `contentpipe up` owns them: ask it to stop them (it also removes the state file).
        os.kill(supervisor, signal.SIGTERM)
        for _ in range(int((STOP_GRACE_SECONDS + 5) * 10)):
            if not stack.pid_alive(supervisor):
                break
            await asyncio.sleep(0.1)
    pids = [info.pid for svc, info in state.services.items() if stack.pid_runs(info.pid, f"contentpipe.{svc}")]
    killed = await stack.stop_pids(pids, grace=STOP_GRACE_SECONDS) if pids else []
    with contextlib.suppress(FileNotFoundError):
        session.config.state_path.unlink()
    message = f"stopped {len(state.services)} services ({session.config.data_dir})"
    if killed:
        message += f"; killed after {STOP_GRACE_SECONDS:.0f} s: {', '.join(map(str, killed))}"
    _say(message)
    return EXIT_OK


async def status_command(session: Session, args: argparse.Namespace) -> int:
    state = stack.read_state(session.config.state_path)
    if state is None:
        # Nothing started here: still report what the configured addresses answer.
        infos = {
            svc: stack.ServiceInfo(svc, 0, int(addr.rpartition(":")[2]), addr, "", "")
            for svc, addr in session.config.addresses.items()
        }
        state = stack.StackState(str(session.config.data_dir), "", None, infos)
        if args.output == "table":
            _say(f"no services started by `contentpipe up` in {session.config.data_dir}; probing the addresses")
    healthy = await _print_status(state, args.output, addresses=session.config.addresses)
    return EXIT_OK if healthy else EXIT_FAILED


async def _print_status(state: stack.StackState, fmt: str, addresses: Any = None) -> bool:
    rows: list[dict[str, Any]] = []
    healths = await asyncio.gather(*(stack.health(info.address) for info in state.services.values()))
    for info, health in zip(state.services.values(), healths, strict=True):
        running = (
            "-"
            if not info.pid
            else ("running" if stack.pid_runs(info.pid, f"contentpipe.{info.service}") else "exited")
        )
        rows.append(
            {
                "service": info.service,
                "pid": info.pid or None,
                "process": running,
                "address": info.address,
                "health": health,
                "database_url": info.database_url or None,
                "log": info.log or None,
            }
        )
    if fmt == "table":
        columns: list[Column] = [
            col("SERVICE", "service"),
            col("PID", "pid"),
            col("PROCESS", "process"),
            col("ADDRESS", "address"),
            col("HEALTH", "health"),
            col("DATABASE", "database_url"),
        ]
        print_table(rows, columns)
    else:
        dump({"data_dir": state.data_dir, "started_at": state.started_at or None, "services": rows}, fmt)
    return all(row["health"] == stack.HEALTH_SERVING for row in rows)


def _say(message: str) -> None:
    # Progress goes to stderr so stdout stays parseable (`-o json`).
    print(message, file=sys.stderr, flush=True)
