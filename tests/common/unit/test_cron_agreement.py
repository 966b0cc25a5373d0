"""Pipelines and the scheduler judge a cron expression alike: a `schedule_pipeline` step that CreatePipeline
accepts is a job the scheduler accepts, and an expression the scheduler refuses is refused when the pipeline is
created (not at run time, when the step would fail)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from contentpipe.common.errors import InvalidArgument
from contentpipe.pipelines.domain.model import SchedulePipeline, Step
from contentpipe.pipelines.domain.validation import validate_steps
from contentpipe.scheduler.service_layer.jobs import JobInput, build_job

pytestmark = pytest.mark.unit

EXPRESSIONS = [
    "0 9 * * MON-FRI",
    "*/15 * * * *",
    "30 2 * * *",
    "0 0 29 2 *",
    "0 0 * * 5#3",  # nth weekday: not in the five-field syntax we accept
    "0 0 * * 5L",
    "R * * * *",  # Jenkins-style random
    "H * * * *",
    "@daily",
    "CRON_TZ=UTC 0 9 * * *",
    "61 9 * * *",
    "0 0 30 2 *",  # never fires
    "0 0 9 * * *",  # six fields
    "",
    "0 24 * * *",
    "0 0 * 13 *",
]
ZONES = ["", "UTC", "Europe/Berlin", "America/New_York", "Mars/Olympus"]


def pipeline_accepts(expression: str, zone: str) -> bool:
    step = Step("next", SchedulePipeline(cron_expression=expression, time_zone=zone))
    return not validate_steps((step,))


def scheduler_accepts(expression: str, zone: str) -> bool:
    value = JobInput(pipeline="pipelines/p1", cron_expression=expression, time_zone=zone)
    try:
        build_job("j1", "u1", value, datetime(2026, 6, 1, tzinfo=UTC))
    except InvalidArgument:
        return False
    return True


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_pipelines_and_scheduler_agree(expression: str, zone: str) -> None:
    assert pipeline_accepts(expression, zone) == scheduler_accepts(expression, zone)


@pytest.mark.parametrize("expression", ["0 0 * * 5#3", "R * * * *"])
def test_expressions_the_scheduler_refuses_fail_create_pipeline(expression: str) -> None:
    step = Step("next", SchedulePipeline(cron_expression=expression, time_zone="UTC"))
    (violation,) = validate_steps((step,))
    assert violation.field == "pipeline.steps[0].schedule_pipeline.cron.expression"
    assert "not valid cron syntax" in violation.description


def test_the_shared_schedule_is_built_once_per_expression_and_zone() -> None:
    """Planning many due jobs reuses one CronSchedule per (expression, zone): building one parses the expression."""
    from contentpipe.common.cron import cron_schedule

    assert cron_schedule("*/5 * * * *", "Europe/Berlin") is cron_schedule("*/5 * * * *", "Europe/Berlin")
