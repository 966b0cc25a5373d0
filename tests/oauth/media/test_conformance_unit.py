"""Unit tests: which media conform to which platform, what the conversion plan is, and what cannot be converted."""

from __future__ import annotations

import pytest
from contentpipe.oauth.domain.media_conformance import MediaProbe, Verdict, assess, fit_geometry, violations
from contentpipe.oauth.domain.media_specs import MB, all_specs, spec_for
from contentpipe.oauth.domain.posts import MediaKind, Platform

pytestmark = pytest.mark.unit

# The local provider's former default video: 512x288, 8 fps, 2 s, 7 KB, no audio.
LOCAL_VIDEO = MediaProbe("video/mp4", 7_000, 512, 288, "h264", "High", "yuv420p", fps=8.0, duration=2.0, faststart=True)
# A clip every platform takes as it is.
GOOD_VIDEO = MediaProbe(
    "video/mp4", 900_000, 720, 1280, "h264", "High", "yuv420p", 30.0, 5.0, "aac", "LC", faststart=True
)
PNG = MediaProbe("image/png", 2 * MB, 1024, 1024)
JPEG = MediaProbe("image/jpeg", 300_000, 1080, 1350)


def spec(platform: Platform, kind: MediaKind = MediaKind.VIDEO):
    found = spec_for(platform, kind)
    assert found is not None
    return found


def test_every_platform_but_youtube_has_an_image_and_a_video_spec() -> None:
    kinds = {(s.platform, s.kind) for s in all_specs()}
    for platform in (Platform.INSTAGRAM, Platform.TIKTOK, Platform.TWITTER, Platform.LINKEDIN, Platform.FACEBOOK):
        assert {(platform, MediaKind.IMAGE), (platform, MediaKind.VIDEO)} <= kinds
    assert (Platform.GOOGLE, MediaKind.VIDEO) in kinds
    assert spec_for(Platform.OUTBOX, MediaKind.VIDEO) is None


@pytest.mark.parametrize("platform", [Platform.INSTAGRAM, Platform.TIKTOK, Platform.TWITTER, Platform.LINKEDIN,
                                      Platform.FACEBOOK, Platform.GOOGLE])  # fmt: skip
def test_a_conventional_vertical_clip_conforms_everywhere(platform: Platform) -> None:
    assert assess(GOOD_VIDEO, spec(platform)).verdict is Verdict.CONFORMS


def test_local_default_video_is_retimed_extended_and_scaled_for_tiktok() -> None:
    result = assess(LOCAL_VIDEO, spec(Platform.TIKTOK))
    assert result.verdict is Verdict.CONVERT
    assert {v.rule for v in result.violations} == {"side", "fps", "duration"}
    plan = result.plan
    assert plan is not None
    assert (plan.canvas_width, plan.canvas_height) == (640, 360)  # shorter side raised to 360, aspect kept
    assert plan.fps == 30
    assert plan.duration >= 3 and plan.extend_seconds == pytest.approx(plan.duration - 2.0)
    assert plan.silent_audio and not plan.copy_video


def test_local_default_video_for_linkedin_needs_a_byte_floor() -> None:
    result = assess(LOCAL_VIDEO, spec(Platform.LINKEDIN))
    assert "bytes" in {v.rule for v in result.violations}
    assert result.plan is not None and result.plan.min_bytes == 75_000


def test_missing_audio_and_index_only_is_a_remux() -> None:
    probe = MediaProbe("video/mp4", 900_000, 720, 1280, "h264", "High", "yuv420p", 30.0, 5.0, faststart=False)
    result = assess(probe, spec(Platform.INSTAGRAM))
    assert {v.rule for v in result.violations} == {"audio", "faststart"}
    assert result.plan is not None and result.plan.copy_video and result.plan.silent_audio


def test_twenty_minute_video_is_impossible_for_tiktok_naming_the_rule() -> None:
    long_video = MediaProbe("video/mp4", 400 * MB, 1080, 1920, "h264", "High", "yuv420p", 30.0, 1200.0, "aac")
    result = assess(long_video, spec(Platform.TIKTOK))
    assert result.verdict is Verdict.IMPOSSIBLE
    assert result.blocking is not None and result.blocking.rule == "duration"
    assert "1200" in result.message and "600" in result.message


def test_same_video_is_fine_for_youtube() -> None:
    long_video = MediaProbe("video/mp4", 400 * MB, 1080, 1920, "h264", "High", "yuv420p", 30.0, 1200.0, "aac")
    assert assess(long_video, spec(Platform.GOOGLE)).verdict is Verdict.CONFORMS


def test_two_hundred_megabyte_image_is_impossible() -> None:
    huge = MediaProbe("image/png", 200 * MB, 8000, 8000)
    result = assess(huge, spec(Platform.INSTAGRAM, MediaKind.IMAGE))
    assert result.verdict is Verdict.IMPOSSIBLE
    assert result.blocking is not None and result.blocking.rule == "bytes"


def test_png_becomes_jpeg_within_instagram_width() -> None:
    result = assess(PNG, spec(Platform.INSTAGRAM, MediaKind.IMAGE))
    assert result.verdict is Verdict.CONVERT
    assert [v.rule for v in result.violations] == ["container"]
    assert result.plan is not None and result.plan.output == "image/jpeg"
    assert (result.plan.canvas_width, result.plan.canvas_height) == (1024, 1024)


def test_tall_image_is_padded_to_instagram_four_by_five() -> None:
    tall = MediaProbe("image/jpeg", 500_000, 1080, 1920)
    plan = assess(tall, spec(Platform.INSTAGRAM, MediaKind.IMAGE)).plan
    assert plan is not None and plan.padded
    assert plan.canvas_width / plan.canvas_height == pytest.approx(0.8, abs=0.01)
    assert plan.height == plan.canvas_height  # nothing cropped: the whole picture keeps its height


def test_wide_image_too_large_is_scaled_down_to_1440() -> None:
    wide = MediaProbe("image/jpeg", 500_000, 3000, 2000)
    plan = assess(wide, spec(Platform.INSTAGRAM, MediaKind.IMAGE)).plan
    assert plan is not None and plan.canvas_width == 1440 and not plan.padded


def test_jpeg_conforms_everywhere_images_go() -> None:
    for platform in (Platform.INSTAGRAM, Platform.TIKTOK, Platform.TWITTER, Platform.LINKEDIN, Platform.FACEBOOK):
        assert violations(JPEG, spec(platform, MediaKind.IMAGE)) == []


def test_png_is_accepted_by_x_linkedin_facebook_but_not_tiktok_photos() -> None:
    assert violations(PNG, spec(Platform.TWITTER, MediaKind.IMAGE)) == []
    assert violations(PNG, spec(Platform.LINKEDIN, MediaKind.IMAGE)) == []
    assert violations(PNG, spec(Platform.FACEBOOK, MediaKind.IMAGE)) == []
    assert [v.rule for v in violations(PNG, spec(Platform.TIKTOK, MediaKind.IMAGE))] == ["container"]


def test_x_video_over_sixty_fps_and_too_wide_is_planned_into_range() -> None:
    probe = MediaProbe("video/mp4", 5 * MB, 2560, 1440, "h264", "High", "yuv420p", 120.0, 10.0, "aac", "LC")
    plan = assess(probe, spec(Platform.TWITTER)).plan
    assert plan is not None and plan.fps == 30
    assert plan.canvas_width <= 1920 and plan.canvas_height <= 1200
    assert plan.canvas_width % 2 == 0 and plan.canvas_height % 2 == 0


def test_baseline_profile_is_refused_by_x() -> None:
    probe = MediaProbe("video/mp4", 5 * MB, 1280, 720, "h264", "Baseline", "yuv420p", 30.0, 10.0, "aac", "LC")
    assert [v.rule for v in violations(probe, spec(Platform.TWITTER))] == ["video_profile"]


def test_unreadable_file_is_impossible() -> None:
    assert assess(MediaProbe("", 100), spec(Platform.TIKTOK)).verdict is Verdict.IMPOSSIBLE


def test_image_given_where_a_video_spec_applies_is_impossible() -> None:
    result = assess(PNG, spec(Platform.TIKTOK))
    assert result.verdict is Verdict.IMPOSSIBLE and result.blocking is not None and result.blocking.rule == "kind"


def test_geometry_keeps_size_when_nothing_requires_a_change() -> None:
    assert fit_geometry(720, 1280, spec(Platform.TIKTOK), even=True) == (720, 1280, 720, 1280)


def test_tiktok_photo_stays_within_1080p() -> None:
    big = MediaProbe("image/png", 3 * MB, 2160, 3840)
    plan = assess(big, spec(Platform.TIKTOK, MediaKind.IMAGE)).plan
    assert plan is not None and plan.canvas_width <= 1080 and plan.canvas_height <= 1920


def test_overrides_replace_one_rows_fields_and_leave_the_rest() -> None:
    from contentpipe.oauth.domain.media_specs import SPECS, with_overrides

    table = with_overrides({"twitter/video": {"duration": [0.5, 600], "video_profiles": ["High"]}})
    x = spec_for(Platform.TWITTER, MediaKind.VIDEO, table)
    assert x is not None and x.duration.high == 600 and x.video_profiles == frozenset({"High"})
    assert spec_for(Platform.TIKTOK, MediaKind.VIDEO, table) is SPECS[(Platform.TIKTOK, MediaKind.VIDEO)]
    five_minutes = MediaProbe("video/mp4", 50 * MB, 1280, 720, "h264", "High", "yuv420p", 30.0, 300.0, "aac", "LC")
    assert assess(five_minutes, spec(Platform.TWITTER)).verdict is Verdict.IMPOSSIBLE
    assert x is not None and assess(five_minutes, x).verdict is Verdict.CONFORMS


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"myspace/video": {}}, "'myspace/video'"),
        ({"google/image": {}}, "no such row"),
        ({"twitter/video": {"duration": 600}}, "twitter/video.duration"),
        ({"twitter/video": {"duration": ["a", 1]}}, "numbers or null"),
        ({"twitter/video": {"label": "Y"}}, "twitter/video.label"),
    ],
)
def test_bad_overrides_name_what_is_wrong(overrides: dict[str, dict[str, object]], named: str) -> None:
    from contentpipe.oauth.domain.media_specs import with_overrides

    with pytest.raises(ValueError, match=named.replace(".", r"\.").replace("'", "'")):
        with_overrides(overrides)


def test_spec_overrides_come_from_the_environment_and_bad_ones_stop_start_up() -> None:
    from pathlib import Path

    from contentpipe.common.settings import ConfigError
    from contentpipe.oauth.adapters.publishers.settings import load_media_config

    config = load_media_config({"OAUTH_MEDIA_SPEC_OVERRIDES": '{"linkedin/video": {"fps": [1, 60]}}'}, Path("/d"))
    assert config.specs is not None
    linkedin = spec_for(Platform.LINKEDIN, MediaKind.VIDEO, config.specs)
    assert linkedin is not None and linkedin.fps.low == 1
    with pytest.raises(ConfigError, match="OAUTH_MEDIA_SPEC_OVERRIDES"):
        load_media_config({"OAUTH_MEDIA_SPEC_OVERRIDES": "[1, 2]"}, Path("/d"))
    with pytest.raises(ConfigError, match="OAUTH_MEDIA_SPEC_OVERRIDES: 'x': expected"):
        load_media_config({"OAUTH_MEDIA_SPEC_OVERRIDES": '{"x": {}}'}, Path("/d"))
