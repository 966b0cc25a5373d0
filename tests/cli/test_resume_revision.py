"""`contentpipe runs resume` after the pipeline changed: it says which revision it uses and takes --latest."""

from __future__ import annotations

import pytest
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc

from tests.cli.conftest import RunCli
from tests.cli.fake_pipelines import RUN_NAME, FakePipelineService, run_at

pytestmark = pytest.mark.integration


@pytest.fixture
def service(fake_server, token: str) -> tuple[FakePipelineService, dict[str, str]]:
    failed = run_at(pb.PIPELINE_RUN_STATE_FAILED, [])
    failed.pipeline_revision = 1
    servicer = FakePipelineService([failed])  # type: ignore[abstract]
    servicer.pipelines["pipelines/p1"] = pb.Pipeline(name="pipelines/p1", display_name="P", revision=3)
    address = fake_server((servicer, pb_grpc.add_PipelineServiceServicer_to_server))
    return servicer, {"CONTENTPIPE_PIPELINES_ADDR": address, "CONTENTPIPE_TOKEN": token}


def test_changed_pipeline_without_a_terminal_keeps_the_runs_revision_and_says_so(run_cli: RunCli, service) -> None:
    servicer, env = service
    result = run_cli("runs", "resume", RUN_NAME, env=env)
    assert result.returncode == 0, result.stderr
    assert "pipelines/p1 changed since this run: the run used revision 1, the pipeline is now at revision 3" in (
        result.stderr
    )
    assert "pass --latest" in result.stderr
    assert "resuming with revision 1 (the failed run's)" in result.stderr
    assert [r.use_latest_revision for r in servicer.resumes] == [False]


def test_latest_resumes_the_fixed_pipeline(run_cli: RunCli, service) -> None:
    servicer, env = service
    result = run_cli("runs", "resume", RUN_NAME, "--latest", env=env)
    assert result.returncode == 0, result.stderr
    assert "resuming with revision 3 (the pipeline's latest)" in result.stderr
    assert [r.use_latest_revision for r in servicer.resumes] == [True]
