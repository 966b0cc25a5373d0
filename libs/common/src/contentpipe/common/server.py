"""The grpc.aio server every service runs: interceptors, health, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import re
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
from contentpipe.common import telemetry
from contentpipe.common._handlers import wrap_handler
from contentpipe.common.auth import AuthInterceptor, TokenVerifier, is_exempt
from contentpipe.common.context import REQUEST_ID_HEADER, deadline_var, request_id_var, user_id_var
from contentpipe.common.database import Schema, check_database_exists
from contentpipe.common.errors import ContentpipeError
from contentpipe.common.grpc_errors import abort_with_error, status_code_for, translate_exception
from contentpipe.common.ids import new_id
from contentpipe.common.reflection import enable_reflection
from contentpipe.common.settings import CommonSettings, ConfigError
from contentpipe.common.tls import server_credentials
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import context as otel_context
from sqlalchemy.ext.asyncio import AsyncEngine

_log = logging.getLogger("contentpipe.server")
_access_log = logging.getLogger("contentpipe.access")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVER_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_connection_idle_ms", 300_000),
    # gRPC sets SO_REUSEPORT by default: a second server on a busy port would bind and silently share (or
    # steal) its traffic. Off, a busy port fails the bind and the service says so.
    ("grpc.so_reuseport", 0),
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# RPC latency and status code per method (OpenTelemetry RPC semantic conventions); exported over OTLP when set.
_rpc_duration = telemetry.get_meter("contentpipe.server").create_histogram(
    "rpc.server.duration", unit="ms", description="Duration of inbound RPCs by method and status code"
)
_loop_failures = telemetry.get_meter("contentpipe.server").create_counter(
    "contentpipe.background.failures", description="Background loops that crashed or exited (the process restarts)"
)
EXIT_BACKGROUND_FAILED = 70  # EX_SOFTWARE: a background loop died; the orchestrator restarts the process


class InjectedFault(RuntimeError):
    """Raised into a background loop on SIGUSR1 when CONTENTPIPE_FAULT_INJECTION is on (chaos, tests)."""


Readiness = Callable[[], Awaitable[bool]]
BackgroundTask = Callable[[], Awaitable[None]]
ShutdownHook = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServiceRegistration:
    """One gRPC service to serve: `add_to_server` is the generated `add_XServicer_to_server`."""

    full_name: str
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: object


class ServiceComponents(Protocol):
    """What a service's `bootstrap.build(config)` returns, as far as serving it goes: everything is built once, the
    database engine is among it, and one `close()` releases it all (channels, HTTP clients, leases, the engine)."""

    @property
    def engine(self) -> AsyncEngine: ...

    async def close(self) -> None: ...


ComponentsT = TypeVar("ComponentsT", bound=ServiceComponents)


async def serve_service(
    settings: CommonSettings,
    components: ComponentsT,
    schema: Schema,
    *,
    registrations: Callable[[ComponentsT], Sequence[ServiceRegistration]],
    background_tasks: Callable[[ComponentsT], Sequence[BackgroundTask]],
    also_ready: Readiness | None = None,
    stop_event: asyncio.Event | None = None,
) -> int:
    """Serve a service's components until SIGTERM: the one `serve` every service's bootstrap runs.

    Ready (health SERVING, background tasks started) once the schema is migrated (applied first when
    `auto_migrate`), the database answers and `also_ready()` (e.g. a storage bucket exists) holds. At shutdown,
    after in-flight calls and background tasks: `components.close()`.
    """

    async def ready() -> bool:
        if settings.auto_migrate:
            await schema.migrate(settings.database_url)
        if also_ready is not None and not await also_ready():
            return False
        return await schema.ready(components.engine)

    return await run_server(
        settings,
        registrations(components),
        on_ready=ready,
        background=background_tasks(components),
        on_shutdown=[components.close],
        stop_event=stop_event,
    )


class RequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Outermost contentpipe interceptor: request id, deadline budget, access log, error mapping.

    Handlers (and the auth interceptor inside this one) just raise ContentpipeError; the status code
    and details are chosen here and only here.
    """

    def __init__(self, service: str) -> None:
        self._service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        metadata = {k.lower(): v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        incoming_id = metadata.get(REQUEST_ID_HEADER, "")
        request_id = incoming_id if _REQUEST_ID.match(incoming_id) else new_id()
        quiet = is_exempt(method)
        domain = self._service
        # Without exported traces there is no OpenTelemetry interceptor outside this one: join the caller's trace
        # (or start one) without a span.
        joined = None if telemetry.tracing_enabled() else telemetry.incoming_context(metadata)

        async def serve(request: Any, context: Any, call: Callable[[], Awaitable[Any]]) -> Any:
            trace_token = otel_context.attach(joined) if joined is not None else None
            rid_token = request_id_var.set(request_id)
            remaining = context.time_remaining()
            deadline_token = deadline_var.set(time.monotonic() + remaining if remaining is not None else None)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await call()
            except grpc.aio.AbortError:
                code = _context_code(context)
                raise
            except ContentpipeError as exc:
                code = status_code_for(exc)
                await abort_with_error(context, exc, domain=domain)
            except NotImplementedError as exc:
                code = grpc.StatusCode.UNIMPLEMENTED
                await abort_with_error(context, exc, domain=domain)
            except Exception as exc:
                mapped = translate_exception(exc)  # database outages and refused values have a meaning
                code = status_code_for(mapped) if isinstance(mapped, ContentpipeError) else grpc.StatusCode.INTERNAL
                await abort_with_error(context, mapped, domain=domain)
            finally:
                duration_ms = round((time.perf_counter() - started) * 1000, 2)
                service_name, _, method_name = method.lstrip("/").rpartition("/")
                _rpc_duration.record(
                    duration_ms,
                    {
                        "rpc.system": "grpc",
                        "rpc.service": service_name,
                        "rpc.method": method_name,
                        "rpc.grpc.status_code": code.value[0],
                    },
                )
                level = logging.DEBUG if quiet else logging.INFO
                _access_log.log(
                    level,
                    "rpc finished",
                    extra={
                        "rpc_method": method,
                        "rpc_code": code.name,
                        "duration_ms": duration_ms,
                        "request_id": request_id,
                        "user_id": user_id_var.get(),
                    },
                )
                deadline_var.reset(deadline_token)
                request_id_var.reset(rid_token)
                if trace_token is not None:
                    otel_context.detach(trace_token)

        return wrap_handler(handler, serve)  # type: ignore[return-value]


def _context_code(context: Any) -> grpc.StatusCode:
    with contextlib.suppress(Exception):
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            return code
    return grpc.StatusCode.UNKNOWN


def build_server(
    settings: CommonSettings,
    *,
    verifier: TokenVerifier | None = None,
    extra_interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> grpc.aio.Server:
    """A grpc.aio server with the standard interceptor chain (OTel when traces are exported → request/errors →
    auth → extras)."""
    verifier = verifier or TokenVerifier(
        secret=settings.jwt_secret,
        jwks_url=settings.jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
    otel = telemetry.server_interceptor() if telemetry.tracing_enabled() else None
    if otel is not None:
        interceptors.append(otel)
    interceptors.extend([RequestInterceptor(settings.service), AuthInterceptor(verifier), *extra_interceptors])
    return grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)


def _port_is_free(host: str, port: int) -> bool:
    """Whether a listener could bind host:port now (SO_REUSEADDR like gRPC's own, no SO_REUSEPORT)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return True  # unresolvable: let gRPC report it
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
    return True


async def _wait_until_ready(on_ready: Readiness | None, stopping: asyncio.Event) -> bool:
    """Poll readiness with backoff until it holds or shutdown starts; returns whether it became ready."""
    if on_ready is None:
        return True
    delay = 0.2
    while not stopping.is_set():
        try:
            if await on_ready():
                return True
            _log.warning("not ready yet; retrying", extra={"retry_in_s": delay})
        except ConfigError:
            raise  # e.g. the database does not exist: waiting cannot fix it
        except Exception:
            _log.exception("readiness check failed; retrying", extra={"retry_in_s": delay})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=delay)
        delay = min(delay * 2, 5.0)
    return False


async def run_server(
    settings: CommonSettings,
    registrations: Sequence[ServiceRegistration],
    *,
    on_ready: Readiness | None = None,
    background: Sequence[BackgroundTask] = (),
    on_shutdown: Sequence[ShutdownHook] = (),
    verifier: TokenVerifier | None = None,
    stop_event: asyncio.Event | None = None,
    bound_port: Callable[[int], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (or `stop_event`), then shut down gracefully; returns the exit code.

    Health is NOT_SERVING until `on_ready()` is true (e.g. database migrated and reachable); then the
    `background` callables start. On shutdown: health NOT_SERVING, in-flight calls get
    `shutdown_grace_seconds`, background tasks are cancelled, `on_shutdown` hooks run (dispose engine,
    close channels).
    """
    stopping = stop_event or asyncio.Event()
    prefix = settings.service.upper()
    await check_database_exists(settings.database_url, setting=f"{prefix}_DATABASE_URL")
    server = build_server(settings, verifier=verifier)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [reg.full_name for reg in registrations]
    for reg in registrations:
        reg.add_to_server(reg.servicer, server)
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if settings.reflection:
        enable_reflection([*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server)
    busy = ConfigError(
        f"{prefix}_GRPC_PORT: cannot listen on {settings.bind_address}: the port is already in use "
        f"(another {settings.service} running?); stop that process or pick another port"
    )
    if not _port_is_free(settings.grpc_host, settings.grpc_port):
        raise busy  # checked first: gRPC's own refusal comes with lines of C-core logging
    try:
        port = (
            server.add_secure_port(settings.bind_address, server_credentials(settings.tls))
            if settings.tls.serves_tls
            else server.add_insecure_port(settings.bind_address)
        )
    except RuntimeError:
        port = 0
    if port == 0:  # taken between the check and the bind
        raise busy
    if bound_port is not None:
        bound_port(port)

    supervisor = _Supervisor(health_servicer, ["", *names], stopping)
    handlers: dict[signal.Signals, Callable[[], None] | None] = {
        signal.SIGTERM: stopping.set,
        signal.SIGINT: stopping.set,
    }
    if settings.fault_injection:
        handlers[signal.SIGUSR1] = supervisor.inject_fault
    _signal_handlers(handlers)

    await server.start()
    _log.info(
        "listening",
        extra={
            "address": f"{settings.grpc_host}:{port}",
            "services": names,
            "tls": "mtls" if settings.tls.requires_client_cert else ("tls" if settings.tls.serves_tls else "off"),
        },
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        if await _wait_until_ready(on_ready, stopping):
            for name in ["", *names]:
                await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
            _log.info("serving")
            tasks = [supervisor.start(job) for job in background]
        await stopping.wait()
    finally:
        _log.info("shutting down", extra={"grace_s": settings.shutdown_grace_seconds})
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.shutdown_grace_seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for hook in on_shutdown:
            try:
                await hook()
            except Exception:
                _log.exception("shutdown hook failed")
        _signal_handlers(dict.fromkeys(handlers))
        _log.info("stopped", extra={"exit_code": supervisor.exit_code})
    return supervisor.exit_code


def _signal_handlers(handlers: dict[signal.Signals, Callable[[], None] | None]) -> None:
    """Install (or, with None, remove) loop signal handlers where the platform allows it."""
    loop = asyncio.get_running_loop()
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            if handler is None:
                loop.remove_signal_handler(sig)
            else:
                loop.add_signal_handler(sig, handler)


class _Supervisor:
    """Runs the background loops; one that crashes (or returns) takes the process down instead of idling.

    A worker loop that died leaves a replica that looks healthy and does nothing. So: health NOT_SERVING at once
    (the load balancer and the probes see it), one error line naming the loop, a metric, then the normal graceful
    shutdown (in-flight calls get the grace period, the other loops give their leases back) and a non-zero exit,
    which the orchestrator answers with a restart.
    """

    def __init__(self, health_servicer: Any, names: Sequence[str], stopping: asyncio.Event) -> None:
        self._health = health_servicer
        self._names = names
        self._stopping = stopping
        self._faults: list[asyncio.Event] = []
        self.exit_code = 0

    def start(self, job: BackgroundTask) -> asyncio.Task[None]:
        # A loop on the work-queue runtime carries its queue's name; any other callable its qualified name.
        name = str(getattr(getattr(job, "__self__", None), "name", None) or getattr(job, "__qualname__", "background"))
        fault = asyncio.Event()
        self._faults.append(fault)
        return asyncio.create_task(self._supervise(job, name, fault), name=f"supervised-{name}")

    def inject_fault(self) -> None:
        """SIGUSR1 with fault injection on: the first loop still running crashes."""
        for fault in self._faults:
            if not fault.is_set():
                fault.set()
                return

    async def _supervise(self, job: BackgroundTask, name: str, fault: asyncio.Event) -> None:
        inner: asyncio.Future[None] = asyncio.ensure_future(job())
        injected: asyncio.Future[Any] = asyncio.ensure_future(fault.wait())
        try:
            await asyncio.wait([inner, injected], return_when=asyncio.FIRST_COMPLETED)
            if not inner.done():
                inner.cancel()
                await asyncio.gather(inner, return_exceptions=True)
                raise InjectedFault(f"fault injected into background loop {name!r}")
            inner.result()
            raise RuntimeError(f"background loop {name!r} returned")
        except asyncio.CancelledError:
            inner.cancel()
            await asyncio.gather(inner, return_exceptions=True)
            raise
        except Exception:
            if self._stopping.is_set():
                return  # already shutting down: a loop failing on the way out is not news
            _log.exception("background loop died; shutting down to be restarted", extra={"loop": name})
            _loop_failures.add(1, {"loop": name})
            self.exit_code = EXIT_BACKGROUND_FAILED
            for service in self._names:
                await self._health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
            self._stopping.set()
        finally:
            injected.cancel()
