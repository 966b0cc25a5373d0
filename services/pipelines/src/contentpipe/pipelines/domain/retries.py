"""Retry timing (full jitter) and the classification of peer failures into step error classes."""

from __future__ import annotations

import random

from contentpipe.common import errors
from contentpipe.common.error_class import ErrorClass
from contentpipe.pipelines.domain.model import RetryPolicy, StepError

REAUTH_MARKERS = ("REAUTH", "REVOKED", "INVALID_GRANT")


def backoff_seconds(policy: RetryPolicy, failed_attempts: int, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, initial * multiplier^(n-1))] after the n-th failed attempt."""
    effective = policy.effective()
    assert effective.initial_backoff is not None and effective.max_backoff is not None
    growth = effective.multiplier ** max(failed_attempts - 1, 0)
    ceiling = min(effective.max_backoff, effective.initial_backoff * growth)
    return (rng or random).uniform(0, ceiling)


def classify(exc: errors.ContentpipeError) -> ErrorClass:
    """How a peer's error decides the step's fate."""
    reason = exc.reason.upper()
    if any(marker in reason for marker in REAUTH_MARKERS):
        return ErrorClass.NEEDS_REAUTH
    if isinstance(exc, errors.ResourceExhausted):
        return ErrorClass.RATE_LIMITED
    if isinstance(exc, errors.Unavailable | errors.DeadlineExceeded | errors.Internal | errors.Aborted):
        return ErrorClass.RETRYABLE
    return ErrorClass.PERMANENT


def step_error(exc: errors.ContentpipeError, what: str) -> StepError:
    error_class = classify(exc)
    hint = {
        ErrorClass.NEEDS_REAUTH: " Connect the account again, then resume the run.",
        ErrorClass.PERMANENT: " Fix the pipeline or its inputs, then resume the run.",
        ErrorClass.RATE_LIMITED: "",
        ErrorClass.RETRYABLE: "",
    }[error_class]
    return StepError(error_class=error_class, reason=exc.reason, message=f"{what}: {exc.message}.{hint}")
