"""Misfire and overlap decisions, backoff bounds, deactivation threshold, request ids."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.scheduler.domain.policies import (
    Backoff,
    Decision,
    MisfirePolicy,
    OverlapPolicy,
    apply_overlap,
    deactivation_threshold,
    effective_catch_up_window,
    plan_misfires,
    run_request_id,
)

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 29, 15, 3, tzinfo=UTC)
HOURLY = [datetime(2026, 11, 29, h, 0, tzinfo=UTC) for h in (11, 12, 13, 14, 15)]


def decisions(policy: MisfirePolicy, window: timedelta = timedelta(hours=1), max_runs: int = 10) -> list[Decision]:
    return [d for _, d in plan_misfires(HOURLY, NOW, policy, window, max_runs)]


def test_latest_runs_the_most_recent_and_coalesces_the_rest() -> None:
    assert decisions(MisfirePolicy.LATEST) == [Decision.COALESCED] * 4 + [Decision.RUN]


def test_latest_outside_the_window_runs_nothing() -> None:
    assert decisions(MisfirePolicy.LATEST, window=timedelta(minutes=2)) == [Decision.MISSED] * 5


def test_skip_runs_nothing_late() -> None:
    assert decisions(MisfirePolicy.SKIP) == [Decision.MISSED] * 5


def test_all_is_bounded_by_window_and_max_runs() -> None:
    assert decisions(MisfirePolicy.ALL, window=timedelta(hours=6)) == [Decision.RUN] * 5
    assert (
        decisions(MisfirePolicy.ALL, window=timedelta(hours=6), max_runs=2)
        == [Decision.MISSED] * 3 + [Decision.RUN] * 2
    )


def test_on_time_fire_runs_under_every_policy() -> None:
    on_time = [NOW - timedelta(seconds=30)]
    for policy in MisfirePolicy:
        assert plan_misfires(on_time, NOW, policy, timedelta(0), 1) == [(on_time[0], Decision.RUN)]


def test_catch_up_window_never_exceeds_the_period() -> None:
    hour = timedelta(hours=1)
    assert effective_catch_up_window(MisfirePolicy.LATEST, None, timedelta(minutes=15), 10) == timedelta(minutes=15)
    assert effective_catch_up_window(MisfirePolicy.LATEST, timedelta(hours=5), hour, 10) == hour
    assert effective_catch_up_window(MisfirePolicy.LATEST, None, timedelta(days=1), 10) == hour
    assert effective_catch_up_window(MisfirePolicy.ALL, timedelta(hours=6), hour, 10) == timedelta(hours=6)


def test_overlap_policies() -> None:
    plan = [(t, Decision.RUN) for t in HOURLY[:3]]
    assert [d for _, d in apply_overlap(plan, OverlapPolicy.SKIP, running=True, buffered=False)] == [
        Decision.SKIPPED
    ] * 3
    assert [d for _, d in apply_overlap(plan, OverlapPolicy.BUFFER_ONE, running=False, buffered=False)] == [
        Decision.RUN,
        Decision.BUFFERED,
        Decision.SKIPPED,
    ]
    assert [d for _, d in apply_overlap(plan, OverlapPolicy.ALLOW, running=True, buffered=True)] == [Decision.RUN] * 3


def test_backoff_full_jitter_stays_within_capped_exponential_bounds() -> None:
    backoff = Backoff(initial=timedelta(seconds=10), multiplier=2.0, maximum=timedelta(seconds=60))
    rng = random.Random(7)
    for n, ceiling in enumerate([10, 20, 40, 60, 60]):
        assert backoff.ceiling(n) == timedelta(seconds=ceiling)
        samples = [backoff.delay(n, rng).total_seconds() for _ in range(500)]
        assert min(samples) >= 0 and max(samples) <= ceiling
        assert max(samples) > ceiling * 0.9 and min(samples) < ceiling * 0.1  # full jitter uses the range


def test_deactivation_threshold_and_request_ids() -> None:
    assert deactivation_threshold(3) == 3 and deactivation_threshold(0) == 1
    nominal = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    first = run_request_id("job-a", nominal)
    assert first == run_request_id("job-a", nominal)
    assert first != run_request_id("job-a", nominal, 2)
    assert first != run_request_id("job-b", nominal)
    assert len(run_request_id("x" * 63, nominal, 20)) <= 128


def test_request_ids_are_the_same_in_every_release() -> None:
    # Records triggered by one release are re-sent by the next with the same id, naming the same pipeline run.
    assert run_request_id("job-a", datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == (
        "scheduler-job-a-f65a9e993de7e137577b699b-a1"
    )
    assert run_request_id("job-a", datetime(2026, 3, 29, 1, 2, 3, 45, tzinfo=UTC), 2, manual=True) == (
        "scheduler-job-a-87104ce44f1957f781026e43-a2"
    )
    assert run_request_id("j", datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), 3) == (
        "scheduler-j-a45ecb24bb7bc9ed848ce18d-a3"
    )
