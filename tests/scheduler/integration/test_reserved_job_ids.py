"""`pipeline-<id>` job ids belong to that pipeline's schedule step: nobody can squat another user's."""

from __future__ import annotations

import pytest
from contentpipe.common.errors import InvalidArgument, NotFound
from contentpipe.scheduler.service_layer.jobs import JobInput

from tests.scheduler.conftest import Harness

pytestmark = pytest.mark.integration

VICTIM, ATTACKER = "user-victim", "user-attacker"


async def test_another_users_pipeline_job_id_cannot_be_taken(harness: Harness) -> None:
    harness.fake.add_pipeline("pipelines/victimpipe", VICTIM)
    harness.fake.add_pipeline("pipelines/attackerpipe", ATTACKER)
    jobs = harness.components.jobs
    cron = "0 9 * * *"
    # Pointing the reserved id at one's own pipeline is refused for the id, naming the rule.
    with pytest.raises(InvalidArgument) as refused:
        await jobs.create_job(
            ATTACKER, JobInput(pipeline="pipelines/attackerpipe", cron_expression=cron), job_id="pipeline-victimpipe"
        )
    assert [v.field for v in refused.value.violations] == ["job_id"]
    assert "reserved" in refused.value.violations[0].description
    # Pointing it at the victim's pipeline fails the ownership check.
    with pytest.raises(NotFound):
        await jobs.create_job(
            ATTACKER, JobInput(pipeline="pipelines/victimpipe", cron_expression=cron), job_id="pipeline-victimpipe"
        )
    # The same squat through the upsert path is refused too.
    with pytest.raises(InvalidArgument):
        await jobs.update_job(
            ATTACKER,
            "jobs/pipeline-victimpipe",
            JobInput(pipeline="pipelines/attackerpipe", cron_expression=cron),
            ["cron"],
            allow_missing=True,
        )
    # So the victim's schedule step (an upsert of its pipeline's job) still works.
    job = await jobs.update_job(
        VICTIM,
        "jobs/pipeline-victimpipe",
        JobInput(pipeline="pipelines/victimpipe", cron_expression=cron),
        ["display_name", "cron", "run_time"],
        allow_missing=True,
    )
    assert (job.id, job.owner) == ("pipeline-victimpipe", VICTIM)


async def test_ordinary_ids_are_unaffected(harness: Harness) -> None:
    harness.fake.add_pipeline("pipelines/mine", VICTIM)
    job = await harness.components.jobs.create_job(
        VICTIM, JobInput(pipeline="pipelines/mine", cron_expression="0 9 * * *"), job_id="pipelines-weekly"
    )
    assert job.id == "pipelines-weekly"
