"""How the CLI shows server answers: rich error details, exit codes, output formats, live runs (non-TTY)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from contentpipe.cli.config import CliConfig, resolve_config
from contentpipe.cli.errors import EXIT_UNAVAILABLE, EXIT_USAGE, CliError
from contentpipe.cli.session import Session

from tests.cli.conftest import RunCli
from tests.cli.fake_pipelines import RUN_NAME, FakePipelineService, failing_run_script, succeeding_run_script
from tests.support import free_port

pytestmark = pytest.mark.integration

PIPELINE = """
display_name: Test
steps:
  - id: video
    generate_content: {kind: VIDEO, prompt: "a sunrise"}
"""


@pytest.fixture
def service(fake_server, token: str) -> tuple[FakePipelineService, dict[str, str]]:
    servicer = FakePipelineService(succeeding_run_script())  # type: ignore[abstract]
    address = fake_server((servicer, pb_grpc.add_PipelineServiceServicer_to_server))
    return servicer, {"CONTENTPIPE_PIPELINES_ADDR": address, "CONTENTPIPE_TOKEN": token}


def test_create_sends_the_token_and_prints_the_name(run_cli: RunCli, service, tmp_path: Path, token: str) -> None:
    servicer, env = service
    (tmp_path / "p.yaml").write_text(PIPELINE)
    result = run_cli("pipelines", "create", "-f", str(tmp_path / "p.yaml"), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("created pipelines/p1 (Test)")
    assert servicer.authorizations == [f"Bearer {token}"]


def test_server_field_violations_are_shown_with_exit_code_3(run_cli: RunCli, service, tmp_path: Path) -> None:
    _, env = service
    (tmp_path / "p.yaml").write_text(PIPELINE.replace('prompt: "a sunrise"', 'prompt: ""'))
    result = run_cli("pipelines", "create", "-f", str(tmp_path / "p.yaml"), env=env)
    assert result.returncode == 3
    assert "INVALID_ARGUMENT [PIPELINE_INVALID]" in result.stderr
    assert "  pipeline.steps[0].generate_content.prompt: required" in result.stderr


def test_client_side_violations_are_reported_before_sending(run_cli: RunCli, service, tmp_path: Path) -> None:
    servicer, env = service
    (tmp_path / "p.yaml").write_text(PIPELINE.replace("prompt:", "promt:"))
    result = run_cli("pipelines", "create", "-f", str(tmp_path / "p.yaml"), env=env)
    assert result.returncode == 3
    assert 'steps[0].generate_content.promt: unknown field, did you mean "prompt"?' in result.stderr
    assert servicer.authorizations == []


def test_not_found_exits_4_with_the_reason(run_cli: RunCli, service) -> None:
    _, env = service
    result = run_cli("pipelines", "get", "nope", env=env)
    assert result.returncode == 4
    assert "NOT_FOUND [PIPELINE_NOT_FOUND]: pipelines/nope not found" in result.stderr


def test_unreachable_service_exits_9_with_a_hint(run_cli: RunCli, token: str) -> None:
    env = {"CONTENTPIPE_PIPELINES_ADDR": f"127.0.0.1:{free_port()}", "CONTENTPIPE_TOKEN": token}
    result = run_cli("--timeout", "3", "pipelines", "list", env=env)
    assert result.returncode == 9
    assert "UNAVAILABLE" in result.stderr and "contentpipe status" in result.stderr


def test_with_the_services_down_every_command_says_they_are_not_running(run_cli: RunCli, tmp_path: Path) -> None:
    env = {"CONTENTPIPE_PIPELINES_ADDR": f"127.0.0.1:{free_port()}"}
    result = run_cli("--data-dir", str(tmp_path / "fresh"), "pipelines", "list", env=env)
    assert result.returncode == 9
    assert "the services are not running" in result.stderr
    assert "no token" not in result.stderr


def test_without_a_token_nothing_is_sent_and_exit_is_2(run_cli: RunCli, service, tmp_path: Path) -> None:
    servicer, env = service
    env = {"CONTENTPIPE_PIPELINES_ADDR": env["CONTENTPIPE_PIPELINES_ADDR"]}
    result = run_cli("--data-dir", str(tmp_path / "empty"), "pipelines", "get", "p1", env=env)
    assert result.returncode == 2
    assert "no token" in result.stderr and "CONTENTPIPE_TOKEN" in result.stderr
    assert servicer.authorizations == []


def test_yaml_and_json_output_round_trip_into_create(run_cli: RunCli, service, tmp_path: Path) -> None:
    _, env = service
    (tmp_path / "p.yaml").write_text(PIPELINE)
    created = run_cli("pipelines", "create", "-f", str(tmp_path / "p.yaml"), "-o", "json", env=env)
    assert json.loads(created.stdout)["steps"][0]["generate_content"]["kind"] == "VIDEO"  # as in the tables
    exported = run_cli("pipelines", "get", "p1", "-o", "yaml", env=env)
    assert yaml.safe_load(exported.stdout)["display_name"] == "Test"
    again = run_cli("pipelines", "create", "-f", "-", env=env, stdin=exported.stdout)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("created pipelines/p2")
    as_json = tmp_path / "p.json"
    as_json.write_text(run_cli("pipelines", "get", "p1", "-o", "json", env=env).stdout)
    from_json = run_cli("pipelines", "create", "-f", str(as_json), env=env)
    assert from_json.returncode == 0, from_json.stderr
    assert from_json.stdout.startswith("created pipelines/p3")


def test_run_wait_prints_each_change_and_where_results_are(run_cli: RunCli, service, tmp_path: Path) -> None:
    _, env = service
    (tmp_path / "p.yaml").write_text(PIPELINE)
    run_cli("pipelines", "create", "-f", str(tmp_path / "p.yaml"), env=env)
    result = run_cli("pipelines", "run", "p1", "--wait", "--interval", "0.05", env=env)
    assert result.returncode == 0, result.stderr
    lines = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line[:2].isdigit()]
    assert lines[0] == f"run {RUN_NAME} QUEUED"
    assert "step video RUNNING" in lines
    assert f"run {RUN_NAME} SUCCEEDED" in lines
    assert "video: video/mp4 320x240, 2s -> /data/generated-content/u/g1/0.mp4" in result.stdout
    assert "post: posted posts/x1 via connections/c1 -> /data/outbox/x1/post.json" in result.stdout
    assert "schedule: next scheduled run 2030-01-02T09:00:00Z (jobs/j1)" in result.stdout


def test_watch_of_a_failed_run_exits_1_and_says_why(run_cli: RunCli, fake_server, token: str) -> None:
    servicer = FakePipelineService(failing_run_script())  # type: ignore[abstract]
    address = fake_server((servicer, pb_grpc.add_PipelineServiceServicer_to_server))
    env = {"CONTENTPIPE_PIPELINES_ADDR": address, "CONTENTPIPE_TOKEN": token}
    result = run_cli("runs", "watch", RUN_NAME, "--interval", "0.05", env=env)
    assert result.returncode == 1
    assert (
        "step post FAILED CONNECTION_NEEDS_REAUTH: step post: connections/c1 must be connected again" in result.stdout
    )
    assert f"contentpipe runs resume {RUN_NAME}" in result.stdout


def test_output_name_prints_only_resource_names_for_scripts(run_cli: RunCli, service, tmp_path: Path) -> None:
    _, env = service
    (tmp_path / "p.yaml").write_text(PIPELINE)
    created = run_cli("pipelines", "create", "-f", str(tmp_path / "p.yaml"), "-o", "name", env=env)
    assert created.stdout == "pipelines/p1\n"
    ran = run_cli("pipelines", "run", "pipelines/p1", "-o", "name", env=env)
    assert ran.stdout == f"{RUN_NAME}\n"


def test_without_a_token_a_listening_remote_service_asks_for_one(tmp_path: Path, fake_server) -> None:
    remote = Session(_config(tmp_path, {"CONTENTPIPE_PIPELINES_ADDR": fake_server()}))
    with pytest.raises(CliError, match="no token") as caught:
        asyncio.run(remote.token_for("pipelines"))
    assert caught.value.exit_code == EXIT_USAGE


def test_without_a_token_and_nothing_listening_it_says_the_services_are_not_running(tmp_path: Path) -> None:
    config = _config(tmp_path, {"CONTENTPIPE_PIPELINES_ADDR": f"127.0.0.1:{free_port()}"})
    fresh_clone = dataclasses.replace(config, address_sources={**config.address_sources, "pipelines": "default"})
    with pytest.raises(CliError, match="the services are not running") as caught:
        asyncio.run(Session(fresh_clone).token_for("pipelines"))
    assert caught.value.exit_code == EXIT_UNAVAILABLE
    assert caught.value.hint is not None and "contentpipe up --detach" in caught.value.hint
    configured = Session(config)
    with pytest.raises(CliError, match="the services are not running") as caught:
        asyncio.run(configured.token_for("pipelines"))
    assert caught.value.hint is not None and "CONTENTPIPE_PIPELINES_ADDR" in caught.value.hint


def _config(tmp_path: Path, environ: dict[str, str]) -> CliConfig:
    return resolve_config(
        environ={"CONTENTPIPE_CONFIG": os.devnull, **environ},
        data_dir=str(tmp_path),
        token=None,
        config_path=None,
        timeout=5,
    )
