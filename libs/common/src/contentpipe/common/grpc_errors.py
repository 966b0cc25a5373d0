"""The one mapping between application exceptions and gRPC statuses with google.rpc.Status details."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NoReturn

import grpc
import grpc.aio
from contentpipe.common import errors
from contentpipe.common.context import request_id_var
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import exc as sa_exc

_log = logging.getLogger(__name__)
# How long a caller should wait before retrying when the database is unreachable (restart, failover).
DATABASE_RETRY_AFTER_SECONDS = 1.0

_STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Order matters only for subclasses; every concrete error class is listed explicitly.
_CODES: dict[type[errors.ContentpipeError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}
_ERRORS_BY_CODE: dict[grpc.StatusCode, type[errors.ContentpipeError]] = {v: k for k, v in _CODES.items()}


def status_code_for(exc: errors.ContentpipeError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_rpc_status(exc: errors.ContentpipeError, *, domain: str) -> grpc.Status:
    """Build the status (code, message, ErrorInfo/BadRequest/RetryInfo details) for an application error."""
    code = status_code_for(exc)
    details = [_pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=domain, metadata=exc.metadata))]
    if isinstance(exc, errors.InvalidArgument) and exc.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                for v in exc.violations
            ]
        )
        details.append(_pack(bad_request))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=details)
    result: grpc.Status = rpc_status.to_status(status)
    return result


def internal_status(*, domain: str) -> grpc.Status:
    """A bland INTERNAL answer that reveals nothing but the request id (to find the logged traceback)."""
    request_id = request_id_var.get() or "unknown"
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error (request id {request_id})",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=domain))],
    )
    result: grpc.Status = rpc_status.to_status(status)
    return result


def translate_exception(exc: BaseException) -> BaseException:
    """The application error an infrastructure exception stands for, or `exc` itself.

    Database failures every service shares are decided here, once, instead of in each repository:
    - the database cannot be reached or is restarting (OperationalError, invalidated connection, pool
      timeout): transient, UNAVAILABLE with a retry hint;
    - the database refuses a value (DataError: out of range, too long, not representable): the request
      is wrong whatever the state, INVALID_ARGUMENT. It is still logged with its trace, because it means
      a field reached storage without the edge validation that would have named it.
    """
    if isinstance(exc, errors.ContentpipeError):
        return exc
    if isinstance(exc, sa_exc.DataError):
        _log.warning("the database refused a request value (missing validation)", exc_info=exc)
        return errors.InvalidArgument(
            "a value in the request is out of range or cannot be stored", reason="VALUE_NOT_STORABLE"
        )
    unreachable = isinstance(exc, sa_exc.OperationalError | sa_exc.TimeoutError | sa_exc.DisconnectionError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    )
    if unreachable:
        _log.warning("database unavailable", exc_info=exc)
        return errors.Unavailable(
            "the database is temporarily unavailable; retry",
            retry_after=DATABASE_RETRY_AFTER_SECONDS,
            reason="DATABASE_UNAVAILABLE",
        )
    return exc


def status_for_exception(exc: BaseException, *, domain: str) -> grpc.Status:
    """Map any exception: application errors keep their meaning; anything else is logged and INTERNAL."""
    exc = translate_exception(exc)
    if isinstance(exc, errors.ContentpipeError):
        return to_rpc_status(exc, domain=domain)
    if isinstance(exc, NotImplementedError):
        # The generated *Servicer base raises NotImplementedError for RPCs whose issue has not landed.
        return to_rpc_status(errors.Unimplemented("method not implemented"), domain=domain)
    _log.error("unhandled exception in RPC handler (a bug)", exc_info=exc)
    return internal_status(domain=domain)


async def abort_with_error(
    context: grpc.aio.ServicerContext[object, object], exc: BaseException, *, domain: str
) -> NoReturn:
    """Abort the call with the mapped status; raises grpc.aio.AbortError as grpc requires."""
    status = status_for_exception(exc, domain=domain)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _decode_status(metadata: object) -> status_pb2.Status | None:
    if not metadata:
        return None
    for key, value in metadata:  # type: ignore[attr-defined]
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    return None


def error_from_rpc(err: grpc.aio.AioRpcError) -> errors.ContentpipeError:
    """Turn a peer's failed call back into the application error it stands for (reason, violations kept).

    Adapters use this so a NOT_FOUND from a peer can be handled (or re-raised) as `NotFound`.
    """
    code = err.code()
    message = err.details() or code.name
    status = _decode_status(err.trailing_metadata())
    reason: str | None = None
    metadata: Mapping[str, str] | None = None
    violations: list[errors.FieldViolation] = []
    retry_after: float | None = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [errors.FieldViolation(v.field, v.description) for v in bad.field_violations]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    return error_from_code(
        code, message, reason=reason, metadata=metadata, violations=violations, retry_after=retry_after
    )


_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def error_from_code(
    code: grpc.StatusCode | int,
    message: str,
    *,
    reason: str | None = None,
    metadata: Mapping[str, str] | None = None,
    violations: Sequence[errors.FieldViolation] = (),
    retry_after: float | None = None,
) -> errors.ContentpipeError:
    """The application error a status code (enum or google.rpc.Code number) stands for; also for the per-item
    errors of a batch response, which carry a code, a message and a reason."""
    if isinstance(code, int):
        code = _CODES_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    message = message or code.name
    cls = _ERRORS_BY_CODE.get(code, errors.Internal)
    if cls is errors.InvalidArgument:
        return errors.InvalidArgument(message, violations, reason=reason, metadata=metadata)
    if cls in (errors.ResourceExhausted, errors.Unavailable):
        return cls(message, retry_after=retry_after, reason=reason, metadata=metadata)
    if code == grpc.StatusCode.CANCELLED:
        return errors.Unavailable(message, reason=reason or "CANCELLED", metadata=metadata)
    return cls(message, reason=reason, metadata=metadata)
