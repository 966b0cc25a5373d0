"""What happens to due fire times: misfire and overlap policies, retry backoff, failure accounting.

Pure functions over plain values so every rule is unit-tested without a database or a clock.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

# A fire time is not a misfire until it is this late (the grace n8n's scheduler uses).
MISFIRE_GRACE = timedelta(seconds=60)
DEFAULT_CATCH_UP_WINDOW = timedelta(hours=1)
DEFAULT_MAX_CATCH_UP_RUNS = 10
DEFAULT_MAX_RETRIES = 3
DEFAULT_INITIAL_BACKOFF = timedelta(minutes=1)
DEFAULT_MULTIPLIER = 2.0
DEFAULT_MAX_BACKOFF = timedelta(hours=1)


class MisfirePolicy(IntEnum):
    """Values match the API enum (contentpipe.api.scheduler.v1.MisfirePolicy)."""

    LATEST = 1
    SKIP = 2
    ALL = 3


class OverlapPolicy(IntEnum):
    SKIP = 1
    BUFFER_ONE = 2
    ALLOW = 3


class Decision(IntEnum):
    """What a due fire time becomes; values match JobRunState where one exists."""

    RUN = 1  # JobRunState TRIGGERED
    MISSED = 5
    SKIPPED = 6
    COALESCED = 7
    BUFFERED = 8


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry waits: `initial * multiplier^n`, capped at `maximum`, with full jitter."""

    initial: timedelta = DEFAULT_INITIAL_BACKOFF
    multiplier: float = DEFAULT_MULTIPLIER
    maximum: timedelta = DEFAULT_MAX_BACKOFF

    def ceiling(self, retry_index: int) -> timedelta:
        """The cap of the wait before retry number `retry_index` (0 for the first retry)."""
        seconds = self.initial.total_seconds() * (self.multiplier ** max(retry_index, 0))
        return timedelta(seconds=min(seconds, self.maximum.total_seconds()))

    def delay(self, retry_index: int, rng: random.Random | None = None) -> timedelta:
        """Full jitter: uniform in [0, ceiling] (AWS architecture blog, pg-boss, River)."""
        ceiling = self.ceiling(retry_index).total_seconds()
        return timedelta(seconds=(rng or random).uniform(0, ceiling))


def effective_catch_up_window(
    policy: MisfirePolicy,
    window: timedelta | None,
    period: timedelta | None,
    max_catch_up_runs: int,
) -> timedelta:
    """The window missed times are caught up in: default 1 h; never more than the schedule's period.

    Under ALL the bound is the period times `max_catch_up_runs`, since ALL exists to replay several periods.
    """
    chosen = window if window is not None else DEFAULT_CATCH_UP_WINDOW
    if period is None:
        return chosen
    bound = period * max_catch_up_runs if policy is MisfirePolicy.ALL else period
    return min(chosen, bound)


def plan_misfires(
    due: Sequence[datetime],
    now: datetime,
    policy: MisfirePolicy,
    window: timedelta,
    max_catch_up_runs: int,
) -> list[tuple[datetime, Decision]]:
    """Decide RUN / MISSED / COALESCED for due fire times (ascending, all <= now).

    A time at most MISFIRE_GRACE late is on time and runs under every policy.
    """
    if not due:
        return []

    def on_time(t: datetime) -> bool:
        return now - t <= MISFIRE_GRACE

    def within_window(t: datetime) -> bool:
        return on_time(t) or now - t <= window

    if policy is MisfirePolicy.SKIP:
        return [(t, Decision.RUN if on_time(t) else Decision.MISSED) for t in due]
    if policy is MisfirePolicy.LATEST:
        latest = due[-1]
        if not within_window(latest):
            return [(t, Decision.MISSED) for t in due]
        return [(t, Decision.COALESCED) for t in due[:-1]] + [(latest, Decision.RUN)]
    # ALL: the most recent `max_catch_up_runs` times within the window run; the rest are missed.
    eligible = [t for t in due if within_window(t)][-max_catch_up_runs:]
    chosen = set(eligible)
    return [(t, Decision.RUN if t in chosen else Decision.MISSED) for t in due]


def apply_overlap(
    plan: Sequence[tuple[datetime, Decision]],
    policy: OverlapPolicy,
    *,
    running: bool,
    buffered: bool,
) -> list[tuple[datetime, Decision]]:
    """Turn RUN decisions into SKIPPED/BUFFERED when a previous run of the job is still going.

    Runs decided in one pass start together, so after the first RUN the job counts as running.
    """
    out: list[tuple[datetime, Decision]] = []
    for t, decision in plan:
        if decision is not Decision.RUN or policy is OverlapPolicy.ALLOW:
            out.append((t, decision))
            continue
        if not running:
            out.append((t, Decision.RUN))
            running = True
        elif policy is OverlapPolicy.BUFFER_ONE and not buffered:
            out.append((t, Decision.BUFFERED))
            buffered = True
        else:
            out.append((t, Decision.SKIPPED))
    return out


def deactivation_threshold(max_retries: int) -> int:
    """Consecutive failures that deactivate a job (0 behaves like 1: no retry, deactivate at once)."""
    return max(1, max_retries)


def run_request_id(job_id: str, nominal: datetime, attempt: int = 1, *, manual: bool = False) -> str:
    """The pipelines `request_id` for (job, nominal time[, attempt]): the same on every replica and restart."""
    stamp = nominal.strftime("%Y%m%dT%H%M%S.%fZ")
    kind = "manual" if manual else "sched"
    key = f"{job_id}|{stamp}|{kind}|{attempt}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    # Readable prefix for people grepping logs; the digest keeps it under 128 characters.
    return f"scheduler-{job_id[:40]}-{digest}-a{attempt}"
