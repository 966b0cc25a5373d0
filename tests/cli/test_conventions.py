"""What users expect from kubectl, gh and temporal: --version, shell completion, short ids, one verb per action."""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

import grpc
import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from contentpipe.api.scheduler.v1 import notification_service_pb2 as npb
from contentpipe.api.scheduler.v1 import notification_service_pb2_grpc as npb_grpc

from tests.cli.conftest import RunCli
from tests.cli.fake_pipelines import RUN_NAME, FakePipelineService, succeeding_run_script

pytestmark = pytest.mark.integration

IDS = ("01a2c3d4e5f60718293a4b5c6d7e8f90", "01a2c3d4e5f6aaaa293a4b5c6d7e8f91", "01a2ffff00000000000000000000000a")


@pytest.fixture
def service(fake_server, token: str) -> tuple[FakePipelineService, dict[str, str]]:
    servicer = FakePipelineService(succeeding_run_script())  # type: ignore[abstract]
    for pipeline_id in IDS:
        name = f"pipelines/{pipeline_id}"
        servicer.pipelines[name] = pb.Pipeline(name=name, display_name=pipeline_id[-4:])
    address = fake_server((servicer, pb_grpc.add_PipelineServiceServicer_to_server))
    return servicer, {"CONTENTPIPE_PIPELINES_ADDR": address, "CONTENTPIPE_TOKEN": token}


def test_version_flag(run_cli: RunCli) -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"contentpipe {version('contentpipe-cli')}"


def _bash_complete(script: Path, *words: str) -> list[str]:
    """Run bash's completion function for `contentpipe WORDS...` (the last word is the one being completed)."""
    line = " ".join(("contentpipe", *words))
    program = f"""
source {script}
COMP_WORDS=(contentpipe {" ".join(repr(w) if w else '""' for w in words)})
COMP_CWORD={len(words)}
COMP_LINE={line!r}
COMP_POINT=${{#COMP_LINE}}
_shtab_contentpipe contentpipe {words[-1] or '""'} {words[-2] if len(words) > 1 else "contentpipe"}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.split()


def test_bash_completion_completes_commands_and_subcommands(run_cli: RunCli, tmp_path: Path) -> None:
    generated = run_cli("completion", "bash")
    assert generated.returncode == 0, generated.stderr
    script = tmp_path / "contentpipe.bash"
    script.write_text(generated.stdout)
    assert "pipelines" in _bash_complete(script, "pi")
    assert {"watch", "list", "cancel", "resume", "get"} <= set(_bash_complete(script, "runs", ""))


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_completion_scripts_know_the_commands(run_cli: RunCli, shell: str) -> None:
    generated = run_cli("completion", shell)
    assert generated.returncode == 0, generated.stderr
    assert "pipelines" in generated.stdout and "watch" in generated.stdout


def test_a_unique_prefix_names_the_pipeline(run_cli: RunCli, service) -> None:
    _, env = service
    result = run_cli("pipelines", "get", "01a2f", "-o", "name", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pipelines/{IDS[2]}\n"


def test_an_ambiguous_prefix_lists_the_candidates(run_cli: RunCli, service) -> None:
    _, env = service
    result = run_cli("pipelines", "get", "01a2c3", env=env)
    assert result.returncode == 3
    assert "ambiguous" in result.stderr
    assert f"pipelines/{IDS[0]}" in result.stderr and f"pipelines/{IDS[1]}" in result.stderr
    assert IDS[2] not in result.stderr


def test_a_run_is_found_by_its_id_alone(run_cli: RunCli, service) -> None:
    _, env = service
    result = run_cli("runs", "get", "r", "-o", "name", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{RUN_NAME}\n"


def test_old_spellings_still_work_hidden_and_point_to_the_one_verb(run_cli: RunCli, service) -> None:
    _, env = service
    group_help = run_cli("pipelines", "--help").stdout
    assert "cancel" not in group_help and "    runs" not in group_help
    listed = run_cli("pipelines", "runs", "-o", "name", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == f"{RUN_NAME}\n"
    assert "use `contentpipe runs list --pipeline PIPELINE`" in listed.stderr


class OneNotification(npb_grpc.NotificationServiceServicer):
    def ListNotifications(
        self, request: npb.ListNotificationsRequest, context: grpc.ServicerContext
    ) -> npb.ListNotificationsResponse:
        return npb.ListNotificationsResponse(notifications=[npb.Notification(name="notifications/n1")])

    def GetNotification(
        self, request: npb.GetNotificationRequest, context: grpc.ServicerContext
    ) -> npb.GetNotificationResponse:
        if request.name != "notifications/n1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"notification {request.name} not found")
        return npb.GetNotificationResponse(
            notification=npb.Notification(
                name=request.name, kind=npb.NOTIFICATION_KIND_JOB_DEACTIVATED, title="job deactivated", job="jobs/j1"
            )
        )


def test_notifications_get_shows_one(run_cli: RunCli, fake_server, token: str) -> None:
    servicer = OneNotification()  # type: ignore[abstract]  # Acknowledge is not called
    address = fake_server((servicer, npb_grpc.add_NotificationServiceServicer_to_server))
    env = {"CONTENTPIPE_SCHEDULER_ADDR": address, "CONTENTPIPE_TOKEN": token}
    shown = run_cli("notifications", "get", "n", "-o", "json", env=env)  # a unique prefix
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "name": "notifications/n1",
        "kind": "JOB_DEACTIVATED",
        "title": "job deactivated",
        "job": "jobs/j1",
    }
    missing = run_cli("notifications", "get", "n2", env=env)
    assert missing.returncode == 4
