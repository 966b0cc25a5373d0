"""CLI failures, the documented exit codes, and readable rendering of gRPC errors (with their rich details)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

# Exit codes (documented in `contentpipe --help` and docs/operations.md). Stable: scripts depend on them.
EXIT_OK = 0
EXIT_FAILED = 1  # the command worked but what it waited for failed (a run FAILED, a service is not healthy)
EXIT_USAGE = 2  # bad flags, unreadable file, nothing to talk to
EXIT_INVALID = 3  # INVALID_ARGUMENT / OUT_OF_RANGE, or a manifest refused before sending
EXIT_NOT_FOUND = 4  # NOT_FOUND
EXIT_CONFLICT = 5  # ALREADY_EXISTS / ABORTED (re-read and retry)
EXIT_PRECONDITION = 6  # FAILED_PRECONDITION (the state forbids it)
EXIT_AUTH = 7  # UNAUTHENTICATED / PERMISSION_DENIED
EXIT_RATE_LIMITED = 8  # RESOURCE_EXHAUSTED
EXIT_UNAVAILABLE = 9  # UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED (service down or unreachable)
EXIT_INTERNAL = 10  # INTERNAL / UNKNOWN / UNIMPLEMENTED / DATA_LOSS: a bug somewhere, see the service log
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODE_BY_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: EXIT_OK,
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_INVALID,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_CONFLICT,
    grpc.StatusCode.ABORTED: EXIT_CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_PRECONDITION,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_RATE_LIMITED,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
    grpc.StatusCode.CANCELLED: EXIT_UNAVAILABLE,
}

EXIT_CODES_HELP = """\
exit codes:
  0   success
  1   the command worked but the thing it waited for failed (run FAILED/CANCELED, service unhealthy)
  2   usage error (bad flags, unreadable file, no token)
  3   invalid argument (client-side manifest check or the server's INVALID_ARGUMENT)
  4   not found            5  conflict (ALREADY_EXISTS, ABORTED)   6  failed precondition
  7   unauthenticated / permission denied   8  rate limited (RESOURCE_EXHAUSTED)
  9   service unavailable / deadline exceeded   10  internal error (see the service log)
  130 interrupted"""

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    description: str


@dataclass
class CliError(Exception):
    """An error the CLI reports as one message (plus violations/hints) and an exit code."""

    message: str
    exit_code: int = EXIT_USAGE
    violations: list[Violation] = field(default_factory=list)
    hint: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class RpcFailure:
    """What a failed call said: code, message, ErrorInfo reason/domain/metadata, BadRequest violations."""

    code: grpc.StatusCode
    message: str
    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    violations: tuple[Violation, ...] = ()
    retry_delay_seconds: float | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODE_BY_STATUS.get(self.code, EXIT_INTERNAL)


def _status_details(err: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    metadata: Any = err.trailing_metadata() or ()
    for key, value in metadata:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def decode_rpc_error(err: grpc.aio.AioRpcError) -> RpcFailure:
    """Decode `grpc-status-details-bin` (google.rpc.Status) into the parts a person needs to see."""
    code = err.code()
    message = err.details() or code.name
    reason = domain = None
    metadata: dict[str, str] = {}
    violations: list[Violation] = []
    retry_delay = None
    status = _status_details(err)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(Violation(v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
    return RpcFailure(code, message, reason, domain, metadata, tuple(violations), retry_delay)


_HINTS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAUTHENTICATED: "set CONTENTPIPE_TOKEN or pass --token (`contentpipe token --user NAME`)",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the service did not answer in time; retry, or raise --timeout",
    grpc.StatusCode.INTERNAL: "a bug in the service: its log has the traceback (logs are under the data dir)",
}


def not_running_hint(source: str) -> str:
    """What to do when nothing answers at an address, depending on where the address came from."""
    if source in ("default", "contentpipe up"):
        return (
            "start the local services with `contentpipe up --detach` (or `contentpipe up` in another terminal); "
            "`contentpipe status` shows what runs"
        )
    return f"the address comes from {source}: check it, and that the service runs there (`contentpipe status`)"


def cli_error_from_rpc(err: grpc.aio.AioRpcError, *, service: str, address: str, source: str = "default") -> CliError:
    failure = decode_rpc_error(err)
    reason = f" [{failure.reason}]" if failure.reason and failure.reason != failure.code.name else ""
    message = f"{service} ({address}) answered {failure.code.name}{reason}: {failure.message}"
    hint = not_running_hint(source) if failure.code == grpc.StatusCode.UNAVAILABLE else _HINTS.get(failure.code)
    if failure.retry_delay_seconds is not None:
        hint = f"retry in {failure.retry_delay_seconds:.0f} s"
    return CliError(message, failure.exit_code, list(failure.violations), hint)
