"""What tables and JSON/YAML show: ages instead of microsecond stamps, the same short enum names everywhere."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.cli.commands.pipelines import RUN_COLUMNS
from contentpipe.cli.manifests import parse_message
from contentpipe.cli.output import age, print_table, to_dict

pytestmark = pytest.mark.unit

NOW = datetime(2030, 1, 2, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("stamp", "shown"),
    [
        ("2030-01-02T11:59:15.123456Z", "44s"),
        ("2030-01-02T11:48:00Z", "12m"),
        ("2030-01-02T09:55:00Z", "2h5m"),
        ("2029-12-29T12:00:00Z", "4d"),
        ("2030-01-02T15:00:00Z", "in 3h"),
        ("", "-"),
        (None, "-"),
    ],
)
def test_times_are_shown_as_ages_like_kubectl(stamp: str | None, shown: str) -> None:
    assert age(stamp, NOW) == shown


def test_json_and_yaml_use_the_short_enum_names_of_the_tables_and_read_back() -> None:
    run = pb.PipelineRun(
        name="pipelines/p/runs/r",
        state=pb.PIPELINE_RUN_STATE_SUCCEEDED,
        trigger=pb.RunTrigger(kind=pb.RUN_TRIGGER_KIND_MANUAL),
        steps=[pb.StepRun(step_id="a", state=pb.STEP_RUN_STATE_REUSED)],
    )
    data = to_dict(run)
    assert data["state"] == "SUCCEEDED"
    assert data["trigger"]["kind"] == "MANUAL"
    assert data["steps"][0]["state"] == "REUSED"
    pipeline = pb.Pipeline(
        display_name="x",
        steps=[pb.Step(id="v", generate_content=pb.GenerateContentStep(kind=2, prompt="p"))],  # type: ignore[arg-type]
    )
    exported = to_dict(pipeline)
    assert not exported["steps"][0]["generate_content"]["kind"].startswith("GENERATION_KIND_")
    assert parse_message(exported, pb.Pipeline, source="-") == pipeline


def test_run_tables_show_an_age_not_a_timestamp() -> None:
    created = datetime.now(UTC).replace(microsecond=123456)
    row = {"name": "pipelines/p/runs/r", "state": "SUCCEEDED", "create_time": created.isoformat()}
    out = io.StringIO()
    print_table([row], RUN_COLUMNS, out)
    assert "AGE" in out.getvalue()
    assert ".123456" not in out.getvalue()
