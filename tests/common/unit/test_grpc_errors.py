"""Error mapping: each application error gets its code and details, and a peer's status maps back."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from contentpipe.common import errors
from contentpipe.common.grpc_errors import error_from_rpc, status_for_exception, to_rpc_status, translate_exception
from sqlalchemy import exc as sa_exc

pytestmark = pytest.mark.unit


def _as_rpc_error(status: grpc.Status) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), status.details, None
    )


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument.single("a", "b"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.Aborted("x"), grpc.StatusCode.ABORTED),
        (errors.ResourceExhausted("x", retry_after=3), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.Unimplemented("x"), grpc.StatusCode.UNIMPLEMENTED),
        (errors.DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_each_error_maps_to_its_code_and_back(exc: errors.ContentpipeError, code: grpc.StatusCode) -> None:
    status = to_rpc_status(exc, domain="pipelines")
    assert status.code == code
    back = error_from_rpc(_as_rpc_error(status))
    assert type(back) is type(exc)
    assert back.reason == exc.reason
    assert back.message == exc.message


def test_field_violations_reason_metadata_and_retry_info_survive_the_round_trip() -> None:
    exc = errors.InvalidArgument(
        "bad pipeline",
        [errors.FieldViolation("pipeline.steps[0].prompt", "must not be empty")],
        reason="PIPELINE_INVALID",
        metadata={"pipeline": "pipelines/p1"},
    )
    back = error_from_rpc(_as_rpc_error(to_rpc_status(exc, domain="pipelines")))
    assert isinstance(back, errors.InvalidArgument)
    assert back.violations == exc.violations
    assert back.reason == "PIPELINE_INVALID"
    assert back.metadata == {"pipeline": "pipelines/p1"}
    throttled = error_from_rpc(
        _as_rpc_error(to_rpc_status(errors.ResourceExhausted("slow down", retry_after=2.5), domain="generation"))
    )
    assert isinstance(throttled, errors.ResourceExhausted)
    assert throttled.retry_after == 2.5


def test_unmapped_exception_becomes_bland_internal() -> None:
    status = status_for_exception(RuntimeError("db password=hunter2"), domain="oauth")
    assert status.code == grpc.StatusCode.INTERNAL
    assert "hunter2" not in status.details
    assert status.details.startswith("internal error (request id")


def test_not_implemented_error_becomes_unimplemented() -> None:
    assert status_for_exception(NotImplementedError(), domain="oauth").code == grpc.StatusCode.UNIMPLEMENTED


def test_database_outage_is_unavailable_with_a_retry_hint_and_refused_value_is_invalid_argument() -> None:
    """PostgreSQL restarting or unreachable is transient (UNAVAILABLE), not a bug (INTERNAL); a value the database
    refuses (out of range) is the request's fault (INVALID_ARGUMENT)."""
    outage = sa_exc.OperationalError("SELECT 1", {}, Exception("FATAL: the database system is shutting down"))
    status = status_for_exception(outage, domain="oauth")
    assert status.code == grpc.StatusCode.UNAVAILABLE
    back = error_from_rpc(_as_rpc_error(status))
    assert isinstance(back, errors.Unavailable)
    assert back.reason == "DATABASE_UNAVAILABLE"
    assert back.retry_after is not None and back.retry_after > 0
    assert "shutting down" not in back.message  # database internals stay in the log
    pool = sa_exc.TimeoutError("QueuePool limit reached")
    assert status_for_exception(pool, domain="oauth").code == grpc.StatusCode.UNAVAILABLE

    refused = sa_exc.DataError("INSERT", {}, Exception("value out of range for type integer"))
    status = status_for_exception(refused, domain="scheduler")
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error_from_rpc(_as_rpc_error(status)).reason == "VALUE_NOT_STORABLE"

    # A constraint the code should have handled is still a bug.
    integrity = sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    assert status_for_exception(integrity, domain="scheduler").code == grpc.StatusCode.INTERNAL
    assert translate_exception(ValueError("x")).__class__ is ValueError
