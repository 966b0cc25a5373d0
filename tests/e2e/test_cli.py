"""End to end through the CLI: up --detach, connect the outbox, create the demo pipeline, run --wait, runs watch
(non-TTY), jobs preview, down; the four services run as real processes on free ports, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from tests.cli.harness import REPO_ROOT, pid_alive, processes_using, run_cli
from tests.support.postgres import create_database, drop_database, postgres_available

pytestmark = pytest.mark.e2e

ANSI = re.compile(r"\x1b\[")
DATABASE_SERVICES = ("generation", "oauth", "pipelines", "scheduler")


def _ok(result, what: str) -> str:
    assert result.returncode == 0, f"{what} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert not ANSI.search(result.stdout), f"{what}: escape codes in non-TTY output"
    return str(result.stdout)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Nothing (the embedded SQLite files), or one fresh PostgreSQL database per service passed through `up`."""
    if request.param == "sqlite":
        yield {}
        return
    reason = postgres_available()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    created = {svc: create_database() for svc in ("generation", "oauth", "pipelines", "scheduler")}
    try:
        yield {f"{svc.upper()}_DATABASE_URL": url for svc, (_, url) in created.items()}
    finally:
        for name, _ in created.values():
            drop_database(name)


def test_cli_drives_the_local_stack(tmp_path: Path, database_env: dict[str, str]) -> None:
    data = tmp_path / "data"
    cp = ("--data-dir", str(data))
    _ok(run_cli(*cp, "up", "--detach", "--ports", "auto", env=database_env), "up --detach")
    status = json.loads(_ok(run_cli(*cp, "status", "-o", "json"), "status"))
    pids = [row["pid"] for row in status["services"]]
    expected_urls = {svc: database_env.get(f"{svc.upper()}_DATABASE_URL", "sqlite") for svc in DATABASE_SERVICES}
    for row in status["services"]:
        assert row["database_url"].startswith(expected_urls[row["service"]].split("://")[0]), row
    try:
        connection = json.loads(_ok(run_cli(*cp, "connections", "connect", "outbox", "-o", "json"), "connect"))
        assert connection["platform"] == "OUTBOX"
        assert connection["status"] == "ACTIVE"

        created = json.loads(
            _ok(
                run_cli(*cp, "pipelines", "create", "-f", str(REPO_ROOT / "examples/local-demo.yaml"), "-o", "json"),
                "create",
            )
        )
        pipeline = created["name"]
        assert pipeline.startswith("pipelines/")
        # `@outbox` was resolved client-side to the connection made above.
        post_step = next(s for s in created["steps"] if "post_to_platform" in s)
        assert post_step["post_to_platform"]["connections"] == [connection["name"]]

        ran = _ok(run_cli(*cp, "pipelines", "run", pipeline, "--wait", "--interval", "0.2", timeout=180), "run --wait")
        run_name = re.search(r"run (pipelines/\S+/runs/\S+) QUEUED|run (pipelines/\S+/runs/\S+) RUNNING", ran)
        assert run_name, ran
        run = run_name.group(1) or run_name.group(2)
        assert f"run {run} SUCCEEDED" in ran
        video = yaml.safe_load((REPO_ROOT / "examples/local-demo.yaml").read_text())["steps"][0]
        size = "{width}x{height}, {duration_seconds:g}s".format(**video["generate_content"]["options"])
        assert re.search(rf"video: video/mp4 {size} -> /\S+\.mp4", ran), ran
        assert re.search(r"post: posted posts/\S+ via connections/\S+ -> \S+", ran), ran
        next_run = re.search(r"schedule: next scheduled run (\S+T09:00:00Z) \((jobs/\S+)\)", ran)
        assert next_run, ran

        watched = _ok(run_cli(*cp, "runs", "watch", run), "runs watch")
        lines = [line.split(" ", 1)[1] for line in watched.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]
        assert lines[-1] == f"run {run} SUCCEEDED"  # after the steps that ended it
        assert [line.split()[1] for line in lines[:-1]] == ["video", "caption", "post", "schedule"]
        assert all(line.split()[2] == "SUCCEEDED" for line in lines[:-1])

        runs = json.loads(_ok(run_cli(*cp, "pipelines", "runs", pipeline, "-o", "json"), "pipelines runs"))
        assert [r["name"] for r in runs["runs"]] == [run]

        job = next_run.group(2)
        jobs = json.loads(_ok(run_cli(*cp, "jobs", "list", "-o", "json"), "jobs list"))
        assert [(j["name"], j["pipeline"]) for j in jobs["jobs"]] == [(job, pipeline)]
        preview = _ok(run_cli(*cp, "jobs", "preview", job, "--count", "3"), "jobs preview")
        assert preview.splitlines()[0] == "0 9 * * * (UTC)"
        assert len(re.findall(r"T09:00:00Z", preview)) == 3
        berlin = json.loads(
            _ok(
                run_cli(
                    *cp,
                    "jobs",
                    "preview",
                    "--cron",
                    "30 2 * * *",
                    "--time-zone",
                    "Europe/Berlin",
                    "--after",
                    "2026-03-28T00:00:00Z",
                    "--count",
                    "2",
                    "-o",
                    "json",
                ),
                "jobs preview --cron",
            )
        )
        assert berlin["fire_times"][1]["in_dst_gap"] is True  # 02:30 does not exist on 2026-03-29 in Berlin

        posts = json.loads(_ok(run_cli(*cp, "posts", "list", "-o", "json"), "posts list"))
        assert [p["state"] for p in posts["posts"]] == ["PUBLISHED"]

        # The server's own validation: its BadRequest violations are shown with their field paths, exit code 3.
        broken = tmp_path / "broken.yaml"
        broken.write_text(
            "display_name: broken\nsteps:\n"
            "  - id: post\n    post_to_platform:\n      connections: ['@outbox']\n"
            "      caption: '{{ steps.later.text }}'\n"
            "  - id: later\n    generate_content: {kind: TEXT, prompt: hi}\n"
        )
        refused = run_cli(*cp, "pipelines", "create", "-f", str(broken))
        assert refused.returncode == 3, refused.stderr
        assert "INVALID_ARGUMENT" in refused.stderr
        assert re.search(r"^  pipeline\.steps\[0\]\.post_to_platform\.caption: .*later", refused.stderr, re.M), (
            refused.stderr
        )

        missing = run_cli(*cp, "pipelines", "get", "pipelines/0000000000000000000000000000dead")
        assert missing.returncode == 4, missing.stderr
        assert "NOT_FOUND" in missing.stderr
    finally:
        down = run_cli(*cp, "down")
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)
    assert processes_using(data) == []


def test_cli_generations_posts_and_notifications(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cp = ("--data-dir", str(data))
    _ok(run_cli(*cp, "up", "--detach", "--ports", "auto"), "up --detach")
    try:
        _ok(run_cli(*cp, "connections", "connect", "outbox"), "connect")
        generation = json.loads(
            _ok(
                run_cli(*cp, "generations", "create", "--kind", "video", "--prompt", "waves", "--width", "160",
                        "--height", "96", "--duration", "1", "--fps", "8", "--wait", "-o", "json"),
                "generations create --wait",
            )
        )  # fmt: skip
        assert generation["state"] == "SUCCEEDED"
        [asset] = generation["outputs"]
        assert (asset["width"], asset["height"], asset["content_type"]) == (160, 96, "video/mp4")
        listed = _ok(run_cli(*cp, "generations", "list", "--kind", "video", "-o", "name"), "generations list")
        assert listed.split() == [generation["name"]]

        post = json.loads(
            _ok(
                run_cli(*cp, "posts", "create", "--connection", "@outbox", "--text", "hello from the CLI",
                        "--media", asset["uri"], "-o", "json"),
                "posts create",
            )
        )  # fmt: skip
        assert post["state"] in {"QUEUED", "PUBLISHING", "PUBLISHED"}
        for _ in range(100):
            got = json.loads(_ok(run_cli(*cp, "posts", "get", post["name"], "-o", "json"), "posts get"))
            if got["state"] == "PUBLISHED":
                break
        assert got["state"] == "PUBLISHED"
        assert Path(got["permalink"].removeprefix("file://")).exists()

        assert "no notifications" in _ok(run_cli(*cp, "notifications", "list"), "notifications list")
        cancel_done = run_cli(*cp, "posts", "cancel", post["name"])
        assert cancel_done.returncode == 6, cancel_done.stderr  # only QUEUED posts can be cancelled
        assert "FAILED_PRECONDITION" in cancel_done.stderr
    finally:
        run_cli(*cp, "down")
