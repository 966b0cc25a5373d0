"""Per-call context variables set by the server interceptors and read by outgoing calls and logs."""

from __future__ import annotations

import time
from contextvars import ContextVar

# The metadata key of a call's request id (kept in logs on both sides of a call).
REQUEST_ID_HEADER = "x-request-id"
# The request id of the call being served (from `x-request-id` or freshly minted); propagated to peers.
request_id_var: ContextVar[str | None] = ContextVar("contentpipe_request_id", default=None)
# The raw incoming `authorization` header, so calls to peers act with the caller's identity.
authorization_var: ContextVar[str | None] = ContextVar("contentpipe_authorization", default=None)
# Absolute `time.monotonic()` deadline of the incoming call, so outgoing calls never outlive it.
deadline_var: ContextVar[float | None] = ContextVar("contentpipe_deadline", default=None)
# The user the current call acts for (mirrors the Principal; kept here for logs without importing auth).
user_id_var: ContextVar[str | None] = ContextVar("contentpipe_user_id", default=None)


def remaining_budget() -> float | None:
    """Seconds left before the incoming call's deadline, or None outside a call / without a deadline."""
    deadline = deadline_var.get()
    if deadline is None:
        return None
    return deadline - time.monotonic()
