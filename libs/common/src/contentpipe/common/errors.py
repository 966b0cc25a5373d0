"""Application exceptions, free of gRPC, so domain and service-layer code can raise them directly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad request field: `field` is a dotted path (`pipeline.steps[2].prompt`)."""

    field: str
    description: str


class ContentpipeError(Exception):
    """Root of every error a service answers on purpose.

    `reason` is an UPPER_SNAKE machine-readable code sent as `ErrorInfo.reason`;
    `metadata` goes into `ErrorInfo.metadata` (never put secrets there).
    """

    default_reason = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgument(ContentpipeError):
    """The request is wrong whatever the state of the system."""

    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: Sequence[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations: tuple[FieldViolation, ...] = tuple(violations)

    @classmethod
    def single(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        """One violation; the message names the field so logs and CLIs are readable."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)], reason=reason)


class NotFound(ContentpipeError):
    """The resource does not exist or belongs to another user (ownership is never revealed)."""

    default_reason = "NOT_FOUND"


class AlreadyExists(ContentpipeError):
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(ContentpipeError):
    """The current state forbids the operation; retrying will not help."""

    default_reason = "FAILED_PRECONDITION"


class Aborted(ContentpipeError):
    """Concurrency conflict (etag mismatch, lost transaction race); the caller may re-read and retry."""

    default_reason = "ABORTED"


class _RetryableError(ContentpipeError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class ResourceExhausted(_RetryableError):
    """A quota or rate limit; `retry_after` (seconds) becomes `RetryInfo.retry_delay`."""

    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(_RetryableError):
    """A transient failure (a peer or upstream is down); `retry_after` is a hint in seconds."""

    default_reason = "UNAVAILABLE"


class PermissionDenied(ContentpipeError):
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(ContentpipeError):
    default_reason = "UNAUTHENTICATED"


class Unimplemented(ContentpipeError):
    default_reason = "UNIMPLEMENTED"


class DeadlineExceeded(ContentpipeError):
    default_reason = "DEADLINE_EXCEEDED"


class Internal(ContentpipeError):
    """Only produced when mapping a peer's INTERNAL/UNKNOWN answer back; services never raise it."""

    default_reason = "INTERNAL"


__all__ = [
    "Aborted",
    "AlreadyExists",
    "ContentpipeError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]
