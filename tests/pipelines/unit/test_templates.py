"""The template language: parsing with positions, static reference checks, rendering without code execution."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from contentpipe.pipelines.domain import templates
from contentpipe.pipelines.domain.templates import StepInfo, TemplateError, check_references, parse, render

pytestmark = pytest.mark.unit

CONTEXT = {
    "steps": {
        "video": {
            "generation": "generations/g1",
            "assets": [{"uri": "file:///a.mp4", "content_type": "video/mp4", "size_bytes": "12"}],
            "text": "",
        },
        "caption": {"generation": "generations/g2", "assets": [], "text": "Hello world"},
        "post": {"posts": ["posts/p1", "posts/p2"]},
    },
    "run": {"trigger_time": datetime(2026, 3, 29, 9, 0, tzinfo=UTC), "trigger_date": "2026-03-29"},
    "pipeline": {"display_name": "Morning"},
}
EARLIER = {
    "video": StepInfo("generate_content", "VIDEO"),
    "caption": StepInfo("generate_content", "TEXT"),
    "post": StepInfo("post_to_platform"),
}


def test_renders_paths_indexes_and_filters() -> None:
    source = (
        "{{ pipeline.display_name | upper }} {{steps.caption.text}} {{ steps.video.assets[0].uri }} "
        "{{ run.trigger_time }} {{ steps.post.posts }} {{ steps.post.posts[1] }}"
    )
    assert render(parse(source), CONTEXT) == (
        "MORNING Hello world file:///a.mp4 2026-03-29T09:00:00Z posts/p1, posts/p2 posts/p2"
    )


def test_truncate_default_trim_and_literal_braces() -> None:
    context = {**CONTEXT, "run": {**CONTEXT["run"], "job": ""}}  # type: ignore[dict-item]
    assert render(parse("{{ steps.caption.text | truncate(5) }}"), context) == "Hell…"
    assert render(parse('{{ run.job | default("manual") }}'), context) == "manual"
    assert render(parse('{{ "{{" }} x {{ "}}" }}'), context) == "{{ x }}"
    assert render(parse("plain text, no placeholders"), context) == "plain text, no placeholders"


def test_parse_errors_carry_line_and_column() -> None:
    with pytest.raises(TemplateError) as caught:
        parse("Hello\n  {{ steps.video.text ")
    assert (caught.value.line, caught.value.column) == (2, 3)
    assert "never closed" in caught.value.description

    with pytest.raises(TemplateError) as caught:
        parse("{{ steps.video.text | shout }}")
    assert "unknown filter 'shout'" in caught.value.description
    assert caught.value.column == 23

    with pytest.raises(TemplateError):
        parse("stray }} here")
    with pytest.raises(TemplateError):
        parse("{{ steps.video.assets[x] }}")
    with pytest.raises(TemplateError):
        parse("{{ __import__('os') }}")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ steps.later.text }}", "runs after this one"),
        ("{{ steps.nope.text }}", "no earlier step with id 'nope'"),
        ("{{ steps.video.posts }}", "produces assets, generation, text, not 'posts'"),
        ("{{ steps.video.text }}", "generates video, which has no text"),
        ("{{ steps.video.assets }}", "pick one and a field"),
        ("{{ steps.video.assets[0] }}", "an asset has the fields"),
        ("{{ steps.video.assets[0].colour }}", "an asset has the fields"),
        ("{{ run.weather }}", "'run' has the fields"),
        ("{{ env.HOME }}", "unknown name 'env'"),
        ("{{ steps.video.generation.name }}", "has no field 'name'"),
    ],
)
def test_references_must_name_earlier_steps_and_produced_fields(source: str, message: str) -> None:
    problems = check_references(parse(source), EARLIER, later_steps=["later"])
    assert len(problems) == 1
    assert message in problems[0].description


def test_valid_references_have_no_problems() -> None:
    source = "{{ steps.caption.text }} {{ steps.video.assets[0].uri }} {{ steps.post.posts[0] }} {{ run.trigger_date }}"
    assert check_references(parse(source), EARLIER) == []


def test_render_reports_missing_values_with_position() -> None:
    with pytest.raises(TemplateError) as caught:
        render(parse("x {{ steps.video.assets[3].uri }}"), CONTEXT)
    assert "index 3 is out of range" in caught.value.description
    assert caught.value.column == 24


def test_nothing_is_evaluated() -> None:
    # Attribute-like paths only look up keys in plain mappings: a dunder is just a missing key.
    with pytest.raises(TemplateError):
        render(parse("{{ pipeline.__class__ }}"), CONTEXT)
    assert templates.format_value(3.0) == "3"
