"""What tables and JSON/YAML show: ages instead of microsecond stamps, the same short enum names everywhere."""

from __future__ import annotations

import io
import itertools
import re
from datetime import UTC, datetime

import pytest
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.cli.commands.pipelines import RUN_COLUMNS
from contentpipe.cli.manifests import parse_message
from contentpipe.cli.output import age, col, print_resource, print_table, to_dict, wrap_points

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


class Terminal(io.StringIO):
    """Output that says it is a terminal, so the CLI lays it out for the terminal's width (COLUMNS)."""

    def isatty(self) -> bool:
        return True

    def text(self) -> str:
        """What the terminal shows (bold and other escape sequences removed)."""
        return re.sub(r"\x1b\[[0-9;]*m", "", self.getvalue())


PATH = "file:///home/alice2/.local/share/contentpipe/generation/data/outputs/user-1/0192f3a7/clip-final.mp4"
MESSAGE = "the platform refused the upload because the video is longer than the account's limit allows today"
TOKEN = "x" * 120


def test_get_views_wrap_between_words_and_path_segments_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    post = post_pb.Post(name="posts/abc", media=[post_pb.Media(uri=PATH)])
    post.last_error.message = MESSAGE
    post.last_error.reason = TOKEN
    out = Terminal()
    print_resource(post, "table", out)
    lines = out.text().splitlines()
    value_column = lines[0].index("posts/abc")
    pieces: dict[str, list[str]] = {}
    key = ""
    for line in lines:
        key = line[:value_column].strip() or key
        pieces.setdefault(key, []).append(line[value_column:].rstrip())
    # Wrapped, and each line ends at a word or path boundary: joined back, they are the value itself.
    assert len(pieces["media[0].uri"]) > 1 and "".join(pieces["media[0].uri"]) == PATH
    assert all(part.endswith("/") for part in pieces["media[0].uri"][:-1]), pieces["media[0].uri"]
    assert len(pieces["last_error.message"]) > 1 and " ".join(pieces["last_error.message"]) == MESSAGE
    # A token wider than the screen is kept whole rather than cut.
    assert pieces["last_error.reason"] == [TOKEN]
    assert all(len(line) <= 80 for line in lines if TOKEN not in line)


def test_list_tables_wrap_between_words_and_path_segments_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    columns = [col("NAME", "name"), col("URI", "uri"), col("ERROR", "error")]
    out = Terminal()
    print_table([{"name": "posts/abc", "uri": PATH, "error": MESSAGE}], columns, out)
    text = out.text()
    assert all(len(line) <= 80 for line in text.splitlines())
    words = text.split()
    for segment in PATH.removeprefix("file:///").split("/"):
        assert any(segment in word for word in words), (segment, text)
    for word in MESSAGE.split():
        assert word in words, (word, text)


@pytest.mark.parametrize(
    ("text", "width", "lines"),
    [
        ("alpha beta gamma", 10, ["alpha beta ", "gamma"]),
        ("/a/bb/ccc/dddd", 6, ["/a/bb/", "ccc/", "dddd"]),
        ("short " + "z" * 12 + " end", 8, ["short ", "z" * 12 + " ", "end"]),
        ("fits", 80, ["fits"]),
    ],
)
def test_wrap_points_break_only_after_spaces_and_slashes(text: str, width: int, lines: list[str]) -> None:
    cuts = [0, *wrap_points(text, width), len(text)]
    assert [text[a:b] for a, b in itertools.pairwise(cuts)] == lines
