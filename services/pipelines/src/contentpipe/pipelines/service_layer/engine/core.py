"""What every part of the engine shares: its settings, the step-outcome exceptions, child request ids and names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from contentpipe.common.workqueue import QueueSettings
from contentpipe.pipelines.domain.model import (
    StepError,
)


@dataclass(frozen=True, slots=True)
class EngineSettings:
    # The run queue on the common runtime: `queue.owner` is this replica's lease owner, `queue.concurrency` the runs
    # in flight here, `queue.poll_interval` how often it looks for runs without a wake-up.
    queue: QueueSettings = field(
        default_factory=lambda: QueueSettings(owner="pipelines", concurrency=200, claim_batch=200)
    )
    max_per_user: int = 20
    poll_initial: float = 0.5
    poll_max: float = 10.0
    poll_multiplier: float = 1.5
    cancel_check_interval: float = 1.0
    # One long poll (WaitGeneration/WaitPost) of a child lasts at most this long; polling with backoff
    # (poll_*) only follows errors and peers without long polls.
    child_wait: float = 20.0
    # How long a step that ends for good asks a peer whether a child whose create's outcome is unknown exists.
    child_settle: float = 30.0


class StepFailed(Exception):
    def __init__(self, error: StepError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class CancelRequested(Exception):
    pass


def now_utc() -> datetime:
    return datetime.now(UTC)


def child_request_id(run_id: str, step_index: int, attempt: int, target: int | None = None) -> str:
    """Deterministic per run, step, attempt (and target): a retried call after a crash finds the same child."""
    base = f"run-{run_id}-s{step_index}-a{attempt}"
    return base if target is None else f"{base}-t{target}"


def child_name(collection: str, owner: str, request_id: str) -> str:
    """The name the engine gives the child it creates under `request_id` (`generations/…` or `posts/…`).

    Chosen before the child exists (the peers take a caller-chosen id), so the write that starts a step's attempt
    already lists its children: no write after each create, and no child that its run does not list, whatever
    happens between the create and the next write. The same key always gives the same name, and the peers answer
    a repeated create of it with the child it made."""
    digest = hashlib.sha256(f"{owner}\0{request_id}".encode()).hexdigest()
    return f"{collection}/{digest[:32]}"
