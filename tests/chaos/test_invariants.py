"""The chaos invariants catch what they claim to (so a green `make chaos` means something)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.chaos.invariants import (
    DeliveredPost,
    Fire,
    GenerationView,
    JobRunView,
    Observed,
    PostView,
    RunView,
    TargetView,
    check,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


def clean() -> Observed:
    run = RunView(
        user="u1",
        name="pipelines/p1/runs/r1",
        state="SUCCEEDED",
        trigger_job="jobs/j1",
        nominal_time=T0,
        generations=("generations/g1",),
        targets=(TargetView("connections/c1", "posts/x1", "PUBLISHED"),),
        retries=1,
    )
    return Observed(
        fires=[Fire("u1", "jobs/j1", "pipelines/p1", T0)],
        job_runs=[JobRunView("jobs/j1", T0, "SUCCEEDED", run.name)],
        runs=[run],
        posts=[PostView("u1", "posts/x1", "PUBLISHED", "twitter", "tw-1", "hello r1")],
        generations=[GenerationView("u1", "generations/g1", "run-r1-s0-a1", "chaos r1")],
        delivered=[DeliveredPost("twitter", "tw-1", "hello r1")],
        prediction_prompts=["chaos r1"],
    )


def test_a_clean_run_has_no_violations_and_counts_retries() -> None:
    verdict = check(clean())
    assert verdict.violations == []
    assert verdict.counts["runs"] == 1
    assert verdict.counts["retries"] == 1
    assert verdict.counts["duplicates"] == verdict.counts["lost"] == verdict.counts["stuck"] == 0


def test_a_fire_time_run_twice_is_a_duplicate_and_a_fire_never_run_is_lost() -> None:
    observed = clean()
    observed.job_runs.append(JobRunView("jobs/j1", T0, "SUCCEEDED", "pipelines/p1/runs/r1"))
    observed.fires.append(Fire("u1", "jobs/j2", "pipelines/p1", T0))
    verdict = check(observed)
    assert verdict.counts["duplicates"] == 1
    assert verdict.counts["lost"] == 1


def test_a_retried_fire_time_is_not_a_duplicate_unless_the_earlier_attempt_had_not_failed() -> None:
    observed = clean()
    first = RunView(
        **{**observed.runs[0].__dict__, "name": "pipelines/p1/runs/r0", "state": "FAILED", "create_time": T0}
    )
    later = RunView(**{**observed.runs[0].__dict__, "create_time": T0.replace(minute=1)})
    observed.runs = [first, later]
    observed.generations.append(GenerationView("u1", "generations/g0", "run-r0-s0-a1", "chaos r0"))
    observed.job_runs = [JobRunView("jobs/j1", T0, "SUCCEEDED", later.name, attempt=2)]
    assert check(observed).counts["duplicates"] == 0
    observed.runs[0] = RunView(**{**first.__dict__, "state": "SUCCEEDED"})
    assert check(observed).counts["duplicates"] == 1


def test_a_run_left_running_is_stuck_and_unlisted_unconfirmed_posts_are_flagged() -> None:
    observed = clean()
    observed.runs[0] = RunView(
        **{**observed.runs[0].__dict__, "state": "RUNNING", "targets": (TargetView("c", "posts/x1", "UNCONFIRMED"),)}
    )
    observed.posts[0] = PostView("u1", "posts/x1", "UNCONFIRMED", "twitter", "", "hello r1")
    observed.delivered = []
    verdict = check(observed)
    assert verdict.counts["stuck"] == 1
    assert verdict.counts["unlisted_unconfirmed"] == 2  # by the run's target, and by the post itself
    observed.unconfirmed_listed.add("posts/x1")
    assert check(observed).counts["unlisted_unconfirmed"] == 0
    observed.unconfirmed_listed.clear()
    observed.posts[0] = PostView("u1", "posts/x1", "PUBLISHED", "twitter", "tw-1", "hello r1")  # reconciled since
    verdict = check(observed)
    assert verdict.counts["unlisted_unconfirmed"] == 0
    assert verdict.counts["stale_run_targets"] == 1


def test_a_post_delivered_twice_or_a_published_post_missing_at_the_platform_is_flagged() -> None:
    observed = clean()
    observed.delivered.append(DeliveredPost("twitter", "tw-2", "hello r1"))
    assert check(observed).counts["duplicates"] == 1
    observed.delivered = []
    assert check(observed).counts["lost"] == 1


def test_two_generations_or_two_predictions_for_one_step_attempt_are_flagged() -> None:
    observed = clean()
    observed.generations.append(GenerationView("u1", "generations/g2", "run-r1-s0-a1", "chaos r1"))
    verdict = check(observed)
    assert verdict.counts["double_generations"] == 1
    assert verdict.counts["unreconciled"] == 1  # g2 is referenced by no run
    observed = clean()
    observed.prediction_prompts.append("chaos r1")
    assert check(observed).counts["double_generations"] == 1


def test_records_that_do_not_reconcile_between_services_are_flagged() -> None:
    observed = clean()
    observed.posts.append(PostView("u1", "posts/orphan", "QUEUED", "twitter", "", "x"))
    observed.job_runs[0] = JobRunView("jobs/j1", T0, "SUCCEEDED", "pipelines/p1/runs/unknown")
    verdict = check(observed)
    assert verdict.counts["unreconciled"] == 2
