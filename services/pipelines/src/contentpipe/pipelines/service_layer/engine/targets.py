"""Post-step targets: what an attempt does with each target, what a post's state means for its target."""

from __future__ import annotations

from dataclasses import replace

from contentpipe.common.error_class import ErrorClass
from contentpipe.pipelines.domain.model import (
    PostState,
    StepError,
    TargetResult,
)
from contentpipe.pipelines.service_layer.ports import (
    PostStatus,
)

# A failed post's class carries over to its target, except that content the platform refused is, for a run, a
# permanent failure like any other (and a post that failed with no class is not retried blindly).
_POST_CLASSES_KEPT = (ErrorClass.RETRYABLE, ErrorClass.RATE_LIMITED, ErrorClass.NEEDS_REAUTH)
# A fixed order of severity: the error that fails a multi-target step is the least recoverable one.
SEVERITY = [ErrorClass.NEEDS_REAUTH, ErrorClass.PERMANENT, ErrorClass.RATE_LIMITED, ErrorClass.RETRYABLE]


def target_outcome(step_id: str, target: TargetResult, status: PostStatus) -> TargetResult:
    where = f"step {step_id!r}, target {target.connection}"
    if status.state == PostState.PUBLISHED:
        return replace(target, post_state=status.state, permalink=status.permalink, error=None)
    if status.state == PostState.UNCONFIRMED:
        error = StepError(
            ErrorClass.PERMANENT,
            "POST_UNCONFIRMED",
            f"{where}: whether {status.name} went out is unknown; check the platform and resolve it with "
            "ResolvePost, then resume the run",
        )
    elif status.state == PostState.CANCELED:
        error = StepError(ErrorClass.PERMANENT, "POST_CANCELED", f"{where}: {status.name} was cancelled")
    else:
        error_class = status.error_class if status.error_class in _POST_CLASSES_KEPT else ErrorClass.PERMANENT
        hint = " Connect the account again, then resume the run." if error_class == ErrorClass.NEEDS_REAUTH else ""
        error = StepError(
            error_class,
            status.error_reason or "POST_FAILED",
            f"{where}: {status.name} failed: {status.error_message or 'no details'}.{hint}",
        )
    return replace(target, post_state=status.state, error=error)


def target_for_attempt(target: TargetResult, attempt: int) -> TargetResult:
    """What step attempt `attempt` does with a target: adopt its post, create it again under the same key, or
    (only after the post itself failed retryably) create a new post under this attempt's key.

    "Never publish twice": a post created by an earlier attempt (even one whose reply was lost, whose key is still
    recorded) is found again through the same request id rather than created anew.
    """
    if not target.post:
        # Never created, or its create failed with no name known (lost reply, UNAVAILABLE, crash): same key.
        return replace(target, error=None, attempt=target.attempt or attempt)
    if target.post_state in (PostState.FAILED, PostState.CANCELED):
        if target.error is None or target.error.error_class.retryable:
            return TargetResult(connection=target.connection, attempt=attempt)
        return target
    if target.post_state.terminal:
        return target  # PUBLISHED, or UNCONFIRMED for a person to resolve
    return replace(target, error=None)  # still in flight (or reading it failed): poll it
