"""Domain rules of generations: validation with field violations, model limits and defaults, the state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.common.errors import FailedPrecondition, InvalidArgument
from contentpipe.generation.domain.catalogue import LOCAL_MODELS, Catalogue, cog_models, replicate_models
from contentpipe.generation.domain.model import (
    Asset,
    Generation,
    GenerationError,
    GenerationKind,
    GenerationOptions,
    GenerationState,
    PredictionRecord,
)
from contentpipe.generation.domain.validation import NewGeneration, validate_new_generation

pytestmark = pytest.mark.unit

CATALOGUE = Catalogue(
    [*LOCAL_MODELS, *replicate_models(), *cog_models({"svd-local": (GenerationKind.VIDEO, "http://cog:5000")})],
    default_provider="local",
)


def fields_of(request: NewGeneration) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_new_generation(request, CATALOGUE)
    return {v.field: v.description for v in caught.value.violations}


def video(**options: object) -> NewGeneration:
    return NewGeneration(kind=GenerationKind.VIDEO, prompt="a fox", options=GenerationOptions(**options))  # type: ignore[arg-type]


def test_local_video_defaults_are_filled_from_the_model() -> None:
    valid = validate_new_generation(video(), CATALOGUE)
    assert valid.spec.name == "local-video"
    # a vertical 720p clip at 30 fps for 5 s: what Instagram, TikTok, X, LinkedIn and Facebook all take
    assert (valid.options.width, valid.options.height, valid.options.fps) == (720, 1280, 30)
    assert valid.options.duration_seconds == 5.0
    assert valid.options.frame_count() == 150


def test_every_bad_option_is_reported_with_its_field_path() -> None:
    bad = fields_of(video(width=330, height=4096, fps=61, duration_seconds=40, motion_strength=300, max_tokens=5))
    assert set(bad) == {
        "generation.options.width",
        "generation.options.height",
        "generation.options.fps",
        "generation.options.duration_seconds",
        "generation.options.motion_strength",
        "generation.options.max_tokens",
    }
    assert "multiple of 8" in bad["generation.options.width"]


def test_prompt_kind_provider_model_and_request_id_are_checked() -> None:
    assert set(fields_of(NewGeneration(kind=None, prompt="  ", options=GenerationOptions()))) == {
        "generation.kind",
        "generation.prompt",
    }
    assert (
        "4,000" in fields_of(NewGeneration(GenerationKind.TEXT, "x" * 4001, GenerationOptions()))["generation.prompt"]
    )
    assert set(fields_of(NewGeneration(GenerationKind.TEXT, "x", GenerationOptions(), provider="openai"))) == {
        "generation.provider"
    }
    assert set(fields_of(NewGeneration(GenerationKind.TEXT, "x", GenerationOptions(), model="nope"))) == {
        "generation.model"
    }
    wrong_kind = fields_of(NewGeneration(GenerationKind.TEXT, "x", GenerationOptions(), model="local-video"))
    assert "produces VIDEO" in wrong_kind["generation.model"]
    assert set(fields_of(NewGeneration(GenerationKind.TEXT, "x", GenerationOptions(), request_id="a b"))) == {
        "request_id"
    }


def test_a_chosen_generation_id_must_be_an_id_of_this_system_and_is_reported_with_other_problems() -> None:
    bad = fields_of(NewGeneration(None, "x", GenerationOptions(), generation_id="0190B6E47C1D70008000000000000000"))
    assert set(bad) == {"generation_id", "generation.kind"}
    assert "32 lowercase hex" in bad["generation_id"]
    chosen = validate_new_generation(
        NewGeneration(GenerationKind.TEXT, "x", GenerationOptions(), generation_id="0190b6e47c1d70008000000000000000"),
        CATALOGUE,
    )
    assert chosen.kind is GenerationKind.TEXT


def test_svd_limits_apply_to_replicate_video() -> None:
    request = NewGeneration(
        GenerationKind.VIDEO, "x", GenerationOptions(width=1000, fps=4, duration_seconds=2), provider="replicate"
    )
    bad = fields_of(request)
    assert "multiple of 64" in bad["generation.options.width"]
    assert "5 to 30" in bad["generation.options.fps"]
    too_long = NewGeneration(
        GenerationKind.VIDEO, "x", GenerationOptions(fps=10, duration_seconds=3), provider="replicate"
    )
    assert "at most 25 frames" in fields_of(too_long)["generation.options.duration_seconds"]
    ok = validate_new_generation(
        NewGeneration(GenerationKind.VIDEO, "x", GenerationOptions(fps=6, duration_seconds=2), provider="replicate"),
        CATALOGUE,
    )
    assert ok.spec.first_frame_model == "stability-ai/sdxl"
    assert (ok.options.width, ok.options.height, ok.options.motion_strength) == (1024, 576, 127)


def test_input_image_must_be_http_or_a_generation_and_text_options_are_separate() -> None:
    assert set(fields_of(video(input_image_uri="file:///etc/passwd"))) == {"generation.options.input_image_uri"}
    validate_new_generation(video(input_image_uri="generations/abc123"), CATALOGUE)
    text = NewGeneration(GenerationKind.TEXT, "x", GenerationOptions(width=64, fps=3, max_tokens=5000))
    assert set(fields_of(text)) == {
        "generation.options.width",
        "generation.options.fps",
        "generation.options.max_tokens",
    }
    assert (
        validate_new_generation(
            NewGeneration(GenerationKind.TEXT, "x", GenerationOptions()), CATALOGUE
        ).options.max_tokens
        == 256
    )


def test_cog_models_come_from_configuration_and_versions_can_be_pinned() -> None:
    valid = validate_new_generation(
        NewGeneration(GenerationKind.VIDEO, "x", GenerationOptions(width=320, height=192), provider="cog"), CATALOGUE
    )
    assert valid.spec.extra["base_url"] == "http://cog:5000"
    pinned = CATALOGUE.find("replicate", "stability-ai/sdxl:abc")
    assert pinned is not None and pinned.reference == "stability-ai/sdxl:abc"


def _generation() -> Generation:
    now = datetime.now(UTC)
    return Generation(
        id="g1", owner="u", kind=GenerationKind.TEXT, prompt="p", options=GenerationOptions(), provider="local",
        model="local-text", create_time=now, deadline_time=now + timedelta(minutes=1),
    )  # fmt: skip


def test_state_machine_moves_forward_only() -> None:
    generation = _generation()
    now = datetime.now(UTC)
    generation.start(now)
    generation.start(now + timedelta(seconds=1))  # resumed: keeps the first start time
    assert generation.state is GenerationState.RUNNING and generation.start_time == now
    generation.add_prediction(PredictionRecord(provider="local", model="m", role="text"))
    with pytest.raises(ValueError):
        generation.add_prediction(PredictionRecord(provider="local", model="m", role="text"))
    generation.report_progress(0.4)
    generation.report_progress(0.2)  # never goes back
    assert generation.progress == 0.4
    generation.succeed(now, [Asset("file:///x", "image/png", 1, "ab", "k")], "text")
    assert generation.progress == 1.0
    with pytest.raises(FailedPrecondition):
        generation.cancel(now)
    with pytest.raises(FailedPrecondition):
        generation.fail(now, GenerationError("PROVIDER_FAILED", "x"))


def test_records_round_trip_through_their_stored_form() -> None:
    record = PredictionRecord(provider="replicate", model="m:v", role="video", id="p1", status="processing",
                              create_time=datetime(2026, 1, 1, tzinfo=UTC), create_key="k", output=["u"])  # fmt: skip
    assert PredictionRecord.from_dict(record.to_dict()) == record
    asset = Asset("s3://x", "video/mp4", 10, "ff", "b/k.mp4", 320, 192, 2.0, 16, 8.0, None, {"provider": "local"})
    assert Asset.from_dict(asset.to_dict()) == asset
    options = GenerationOptions(1.5, 64, 64, 8, -5, 3, "https://x/y.png", 0, {"a": [1]})
    assert GenerationOptions.from_dict(options.to_dict()) == options


def test_unconfigured_providers_are_refused_naming_the_setting_that_enables_them() -> None:
    from contentpipe.generation.bootstrap import build_catalogue
    from contentpipe.generation.config import load_config

    catalogue = build_catalogue(load_config({"CONTENTPIPE_JWT_SECRET": "x" * 32}))
    for provider, setting in (("replicate", "REPLICATE_API_TOKEN"), ("cog", "COG_MODELS")):
        with pytest.raises(InvalidArgument) as caught:
            validate_new_generation(
                NewGeneration(GenerationKind.IMAGE, "a fox", GenerationOptions(), provider=provider), catalogue
            )
        (violation,) = caught.value.violations
        assert violation.field == "generation.provider"
        assert f"{provider!r} is not configured" in violation.description and setting in violation.description
    configured = build_catalogue(
        load_config(
            {"CONTENTPIPE_JWT_SECRET": "x" * 32, "REPLICATE_API_TOKEN": "r8_x", "COG_MODELS": "m:IMAGE=http://c:5000"}
        )
    )
    for provider in ("replicate", "cog"):
        request = NewGeneration(GenerationKind.IMAGE, "a fox", GenerationOptions(), provider=provider)
        assert validate_new_generation(request, configured).spec.provider == provider
