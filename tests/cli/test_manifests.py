"""Manifests are checked client-side with field paths before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.cli.errors import EXIT_INVALID, CliError
from contentpipe.cli.manifests import connection_references, parse_message, read_document

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _violations(document: object) -> dict[str, str]:
    with pytest.raises(CliError) as caught:
        parse_message(document, pb.Pipeline, source="p.yaml")
    assert caught.value.exit_code == EXIT_INVALID
    return {v.field: v.description for v in caught.value.violations}


def test_unknown_field_names_its_path_and_the_closest_field() -> None:
    found = _violations({"display_name": "x", "steps": [{"id": "a", "generate_content": {"promt": "hi"}}]})
    assert found == {"steps[0].generate_content.promt": 'unknown field, did you mean "prompt"?'}


def test_every_violation_is_reported_at_once() -> None:
    found = _violations(
        {
            "steps": [
                {"id": "a", "generate_content": {"kind": "MOVIE", "options": {"width": "wide"}}},
                {"id": 7, "retry_policy": {"initial_backoff": "five"}},
            ]
        }
    )
    assert set(found) == {
        "steps[0].generate_content.kind",
        "steps[0].generate_content.options.width",
        "steps[1].id",
        "steps[1].retry_policy.initial_backoff",
    }
    assert "VIDEO, IMAGE, TEXT" in found["steps[0].generate_content.kind"]


def test_two_members_of_a_oneof_are_refused() -> None:
    found = _violations(
        {"steps": [{"id": "a", "generate_content": {"prompt": "p"}, "schedule_pipeline": {"delay": "60s"}}]}
    )
    assert "only one of action" in found["steps[0].schedule_pipeline"]


def test_enum_values_may_drop_their_prefix_and_json_names_are_accepted() -> None:
    pipeline = parse_message(
        {"displayName": "d", "steps": [{"id": "v", "generateContent": {"kind": "video", "prompt": "p"}}]},
        pb.Pipeline,
        source="p.yaml",
    )
    assert pipeline.display_name == "d"
    assert pipeline.steps[0].generate_content.kind == gen_pb.GENERATION_KIND_VIDEO


def test_durations_and_timestamps_parse_in_their_json_form() -> None:
    pipeline = parse_message(
        {
            "steps": [
                {
                    "id": "s",
                    "schedule_pipeline": {"run_time": "2030-01-01T09:00:00Z"},
                    "retry_policy": {"initial_backoff": "1.5s"},
                }
            ]
        },
        pb.Pipeline,
        source="p.yaml",
    )
    assert pipeline.steps[0].schedule_pipeline.run_time.ToJsonString() == "2030-01-01T09:00:00Z"
    assert pipeline.steps[0].retry_policy.initial_backoff.ToMilliseconds() == 1500


def test_not_a_mapping_is_refused() -> None:
    assert _violations(["a", "b"]) == {"(document)": "expected a mapping of Pipeline fields, got list"}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid_pipelines(path: Path) -> None:
    document = read_document(str(path))
    references = list(connection_references(document))
    assert references, "every example posts somewhere through an @platform reference"
    for connections, index, platform in references:
        connections[index] = f"connections/{platform}-1"
    pipeline = parse_message(document, pb.Pipeline, source=str(path))
    kinds = [step.WhichOneof("action") for step in pipeline.steps]
    assert kinds[-1] == "schedule_pipeline"
    assert "post_to_platform" in kinds and "generate_content" in kinds


def test_unreadable_and_malformed_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="cannot read"):
        read_document(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [\n  - id: a\n   x: 1\n")
    with pytest.raises(CliError, match=r"line \d+"):
        read_document(str(bad))
