"""Pipeline validation: every problem is a field violation naming the step and field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from contentpipe.common.cron import cron_violations
from contentpipe.common.errors import InvalidArgument, Unavailable
from contentpipe.pipelines.domain.model import (
    GenerateContent,
    GenerationKind,
    Platform,
    PostToPlatform,
    RetryPolicy,
    SchedulePipeline,
    Step,
)
from contentpipe.pipelines.domain.validation import validate_steps
from contentpipe.pipelines.service_layer.pipelines import validate_definition

from tests.pipelines.unit.memory import FakePeerServices

pytestmark = pytest.mark.unit


def gen(step_id: str = "video", kind: GenerationKind = GenerationKind.VIDEO, prompt: str = "a cat") -> Step:
    return Step(step_id, GenerateContent(kind=kind, prompt=prompt))


def post(connections: tuple[str, ...], media: str = "video", caption: str = "", **options: object) -> Step:
    return Step("post", PostToPlatform(connections=connections, caption=caption, media_step_id=media, options=options))


def fields(steps: tuple[Step, ...]) -> dict[str, str]:
    return {v.field: v.description for v in validate_steps(steps)}


def test_a_valid_pipeline_has_no_violations() -> None:
    steps = (
        gen(),
        Step("caption", GenerateContent(kind=GenerationKind.TEXT, prompt="caption for {{ steps.video.generation }}")),
        post(("connections/c1",), caption="{{ steps.caption.text }}"),
        Step("next", SchedulePipeline(cron_expression="0 9 * * MON-FRI", time_zone="Europe/Berlin")),
    )
    assert validate_steps(steps) == []


def test_step_ids_must_be_well_formed_and_unique() -> None:
    found = fields((gen("video"), gen("video"), gen("Bad Id")))
    assert "duplicate step id 'video'" in found["pipeline.steps[1].id"]
    assert "lower-case" in found["pipeline.steps[2].id"]


def test_reference_to_a_later_step_names_the_step_and_field() -> None:
    found = fields((gen("video", prompt="{{ steps.caption.text }}"), gen("caption", GenerationKind.TEXT)))
    description = found["pipeline.steps[0].generate_content.prompt"]
    assert "runs after this one" in description and "1:10" in description


def test_post_step_rules() -> None:
    found = fields(
        (
            gen("words", GenerationKind.TEXT),
            Step(
                "post",
                PostToPlatform(
                    connections=("connections/a", "connections/a", "bad"),
                    media_step_id="words",
                    caption="{{ steps.words.assets[0].uri }} {{ oops",
                ),
            ),
        )
    )
    assert "listed twice" in found["pipeline.steps[1].post_to_platform.connections[1]"]
    assert "expected connections/" in found["pipeline.steps[1].post_to_platform.connections[2]"]
    assert "generates text, which has no media" in found["pipeline.steps[1].post_to_platform.media_step_id"]
    assert "never closed" in found["pipeline.steps[1].post_to_platform.caption"]


def test_schedule_rules() -> None:
    found = fields(
        (
            Step("a", SchedulePipeline(cron_expression="0 9 * *", time_zone="Mars/Base")),
            Step("b", SchedulePipeline()),
            Step("c", SchedulePipeline(delay_seconds=0.5)),
            Step("d", SchedulePipeline(run_time=datetime(2030, 1, 1, tzinfo=UTC))),
        )
    )
    assert "expected 5 fields" in found["pipeline.steps[0].schedule_pipeline.cron.expression"]
    assert "unknown time zone" in found["pipeline.steps[0].schedule_pipeline.cron.time_zone"]
    assert "exactly one" in found["pipeline.steps[1].schedule_pipeline"]
    assert "1 s to 366 days" in found["pipeline.steps[2].schedule_pipeline.delay"]
    assert not any(key.startswith("pipeline.steps[3]") for key in found)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("CRON_TZ=UTC 0 9 * * *", "prefixes are not accepted"),
        ("61 9 * * *", "not a valid cron expression"),
        ("0 0 30 2 *", "can never fire"),
        ("0 0 9 * * *", "expected 5 fields"),
    ],
)
def test_cron_expressions(expression: str, message: str) -> None:
    (violation,) = cron_violations("pipeline.steps[0].schedule_pipeline.cron", expression, "UTC")
    assert message in violation.description


def test_retry_policy_bounds() -> None:
    step = Step(
        "video",
        GenerateContent(kind=GenerationKind.VIDEO, prompt="x"),
        RetryPolicy(max_attempts=11, initial_backoff=7200, multiplier=0.5),
    )
    found = fields((step,))
    assert set(found) == {
        "pipeline.steps[0].retry_policy.max_attempts",
        "pipeline.steps[0].retry_policy.initial_backoff",
        "pipeline.steps[0].retry_policy.backoff_multiplier",
    }


async def test_unknown_connection_and_incompatible_media_are_violations() -> None:
    peers = FakePeerServices(
        connections={
            "connections/yt": ("u", Platform.GOOGLE),
            "connections/ig": ("u", Platform.INSTAGRAM),
            "connections/tt": ("u", Platform.TIKTOK),
        }
    )
    steps = (
        gen("pic", GenerationKind.IMAGE),
        post(("connections/missing", "connections/yt", "connections/ig", "connections/tt"), media="pic"),
    )
    with pytest.raises(InvalidArgument) as caught:
        await validate_definition("P", "", steps, peers.peers())
    found = {v.field: v.description for v in caught.value.violations}
    assert "does not exist or is not yours" in found["pipeline.steps[1].post_to_platform.connections[0]"]
    # Whether the platform takes the step's media is the posting service's rule too, said of the target.
    refused_media = found["pipeline.steps[1].post_to_platform.connections[1]"]
    assert refused_media == "YouTube takes exactly one video (for connections/yt); step 'pic' makes image"
    # Platform options are the posting service's rules (its validate_only answer, here its own code): one home.
    assert "required for YouTube" in found["pipeline.steps[1].post_to_platform.options.youtube.title"]
    assert "required for TikTok" in found["pipeline.steps[1].post_to_platform.options.tiktok.privacy_level"]
    # Instagram and TikTok (photo posts) take an image.
    assert "pipeline.steps[1].post_to_platform.connections[2]" not in found
    assert "pipeline.steps[1].post_to_platform.connections[3]" not in found
    # Looked up with the caller's own identity (no acting-for), once each.
    assert sorted(peers.lookups) == [
        ("connections/ig", None),
        ("connections/missing", None),
        ("connections/tt", None),
        ("connections/yt", None),
    ]
    assert caught.value.reason == "INVALID_PIPELINE"


@pytest.mark.parametrize("zone", ["a" * 300, "Europe/" + "a" * 300, "Europe", "Europe/", "a\x00", "__init__.py"])
def test_hostile_time_zone_names_are_a_violation_not_a_crash(zone: str) -> None:
    """ZoneInfo raises OSError (name too long), IsADirectoryError or ValueError for these (fuzz suite)."""
    (violation,) = cron_violations("pipeline.steps[0].schedule_pipeline.cron", "0 9 * * *", zone)
    assert violation.field == "pipeline.steps[0].schedule_pipeline.cron.time_zone"
    assert "unknown time zone" in violation.description


@pytest.mark.parametrize("down", ["generations", "posts"])
async def test_a_peer_that_cannot_check_a_step_fails_the_create_unavailable_never_accepts_it(down: str) -> None:
    peers = FakePeerServices(
        connections={"connections/yt": ("u", Platform.GOOGLE)},
        validate_outage={down: Unavailable("failed to connect to all addresses")},
    )
    steps = (gen(), post(("connections/yt",), youtube={"title": "Daily"}))
    with pytest.raises(Unavailable) as caught:
        await validate_definition("P", "", steps, peers.peers())
    service = "generation" if down == "generations" else "oauth (posting)"
    assert f"the {service} service is unavailable (failed to connect to all addresses)" in caught.value.message
    assert "nothing was created or changed, try again" in caught.value.message
    assert caught.value.reason == "STEP_NOT_CHECKED"
