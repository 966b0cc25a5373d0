"""How a failed piece of work should be handled next: the one error classification every service shares.

The values are the names stored in the services' databases (posts' `last_error`, pipeline runs' step errors) and
the suffixes of the API enums (`PostErrorClass`, `StepErrorClass`), so they never change; codecs map them to and
from the proto enums. Which failure gets which class is each service's rule; this only says what a class means.
"""

from __future__ import annotations

import enum


class ErrorClass(enum.StrEnum):
    # Transient (an outage, a timeout, an outcome not known yet): trying again later may succeed.
    RETRYABLE = "RETRYABLE"
    # Wrong in itself (invalid input, cancelled, refused for good): trying again gives the same answer.
    PERMANENT = "PERMANENT"
    # A quota or rate limit: try again, but not before the limit resets.
    RATE_LIMITED = "RATE_LIMITED"
    # The account's authorization was refused or revoked: a person must connect it again first.
    NEEDS_REAUTH = "NEEDS_REAUTH"
    # The platform refused the content itself (a policy or a spec): permanent for that content.
    REJECTED_BY_PLATFORM = "REJECTED_BY_PLATFORM"

    @property
    def retryable(self) -> bool:
        """Whether a retry policy may try the work again without a person changing anything."""
        return self in (ErrorClass.RETRYABLE, ErrorClass.RATE_LIMITED)
