"""One trace per scheduled run: the scheduler's pass, the pipelines API call, the run on a worker, the generation
and the post all share one trace id across the four service processes, exported over OTLP to a loopback collector."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.oauth.v1 import connection_service_pb2 as conn_pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc as conn_grpc
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched_pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tests.pipelines.integration.support import FAST_ENGINE, Client, create, generate_step, post_step
from tests.support import TEST_JWT_SECRET, ServiceProcess, bearer
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e

SERVICES = ("generation", "oauth", "pipelines", "scheduler")
FAST_EXPORT = {
    "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: spans leave each process within a fraction of a second
    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    # The serve loop stays out of the way: the test ticks the scheduler itself (ProcessDueJobs).
    "SCHEDULER_PROCESS_INTERVAL": "1h",
}


def _services_in(spans: list[ReceivedSpan]) -> set[str]:
    return {s.service.removeprefix("contentpipe-") for s in spans}


def _parentless(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    """Spans without a parent in `spans`: the root, plus any whose parent was not (yet) exported."""
    ids = {s.span_id for s in spans}
    return [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids]


@pytest.mark.parametrize("tick", ["process_due_jobs_rpc", "cronjob_tick_command"])
def test_one_scheduled_run_is_one_trace_across_the_four_services(tmp_path: Path, tick: str) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    with OtlpReceiver() as otlp:
        processes = {name: ServiceProcess(name, tmp_path / name) for name in SERVICES}
        addresses = {f"CONTENTPIPE_{name.upper()}_ADDR": proc.address for name, proc in processes.items()}
        for proc in processes.values():
            proc.env.update(
                {
                    **addresses,
                    **FAST_EXPORT,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
                    "CONTENTPIPE_ALLOW_PRIVATE_URLS": "1",
                }
            )
        processes["pipelines"].env.update(FAST_ENGINE)
        started: list[ServiceProcess] = []
        try:
            for name in SERVICES:
                started.append(processes[name].start())
            with grpc.insecure_channel(processes["oauth"].address) as oauth:
                connection = (
                    conn_grpc.ConnectionServiceStub(oauth)
                    .CompleteConnection(
                        conn_pb.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX), metadata=bearer(user)
                    )
                    .connection
                )
            client = Client(processes["pipelines"].address, user)
            pipeline = create(
                client,
                generate_step("image", kind=gen_pb.GENERATION_KIND_IMAGE),
                post_step([connection.name], media="image", caption="{{ steps.image.assets[0].uri }}"),
                name="Traced",
            )

            # A one-off job due now, then one scheduler pass: through the API, or as the CronJob runs it.
            due = Timestamp()
            due.FromDatetime(datetime.now(UTC) + timedelta(seconds=1))
            with grpc.insecure_channel(processes["scheduler"].address) as channel:
                scheduler = sched_grpc.SchedulerServiceStub(channel)
                job = scheduler.CreateJob(
                    sched_pb.CreateJobRequest(job=sched_pb.Job(pipeline=pipeline.name, run_time=due)),
                    metadata=bearer(user),
                    timeout=10,
                ).job
                time.sleep(1.5)
                if tick == "process_due_jobs_rpc":
                    processed = scheduler.ProcessDueJobs(
                        sched_pb.ProcessDueJobsRequest(job=job.name), metadata=bearer(user), timeout=30
                    )
                    assert processed.claimed == 1, processed
                else:
                    pass_ = subprocess.run(
                        [sys.executable, "-m", "contentpipe.scheduler", "tick"],
                        env=processes["scheduler"].env,
                        capture_output=True,
                        text=True,
                        timeout=60,
                        check=False,
                    )
                    assert pass_.returncode == 0, pass_.stderr

            (run,) = client.ListPipelineRuns(pb.ListPipelineRunsRequest(parent=pipeline.name)).runs
            run = client.wait_run(run.name, timeout=120)
            # The trace is what this test is about: a run that ends FAILED still has to be one trace.
            assert run.state in (pb.PIPELINE_RUN_STATE_SUCCEEDED, pb.PIPELINE_RUN_STATE_FAILED), run
            client.close()

            def run_traced(receiver: OtlpReceiver) -> bool:
                """The run's trace has all four services and every span's parent (spans end, so export, late)."""
                runs = [s for s in receiver.spans() if s.attributes.get("contentpipe.run") == run.name]
                if not runs:
                    return False
                trace = receiver.trace(runs[0].trace_id)
                return _services_in(trace) >= set(SERVICES) and len(_parentless(trace)) == 1

            otlp.wait_for(run_traced, timeout=30)
            run_spans = [s for s in otlp.spans() if s.attributes.get("contentpipe.run") == run.name]
            assert run_spans, "the pipelines worker exported no span for the run"
            trace_ids = {s.trace_id for s in run_spans}
            assert len(trace_ids) == 1, "a run's spans are split over several traces"
            (trace_id,) = trace_ids
            assert run.trace_id == trace_id, "GetPipelineRun names the run's trace (what `runs get` shows)"
            spans = otlp.trace(trace_id)
            by_service = {svc: [s.name for s in spans if s.service == f"contentpipe-{svc}"] for svc in SERVICES}
            assert all(by_service.values()), f"services missing from trace {trace_id}: {by_service}"
            # The trace starts at the scheduler's pass and reaches the provider and platform work.
            first_hop = "ProcessDueJobs" if tick == "process_due_jobs_rpc" else "PipelineService/RunPipeline"
            assert any(first_hop in name for name in by_service["scheduler"]), by_service["scheduler"]
            assert any("RunPipeline" in name for name in by_service["pipelines"]), by_service["pipelines"]
            assert any("CreateGeneration" in name for name in by_service["generation"]), by_service["generation"]
            assert any("CreatePost" in name for name in by_service["oauth"]), by_service["oauth"]
            # One trace: a single root span (the scheduler's), every other span has its parent in the trace.
            roots = _parentless(spans)
            assert len(roots) == 1, f"several roots (or parents never exported): {roots}"
            assert roots[0].service == "contentpipe-scheduler" and not roots[0].parent_span_id, roots

            # Logs: JSON lines carrying the same trace id in every service, and never the credentials.
            # (The tick command's few lines are outside its RunPipeline call; the others log inside their spans.)
            for name in SERVICES if tick == "process_due_jobs_rpc" else ("generation", "oauth", "pipelines"):
                lines = [json.loads(line) for line in processes[name].logs().splitlines() if line.startswith("{")]
                in_trace = [entry for entry in lines if entry.get("trace_id") == trace_id]
                assert in_trace, f"{name} logged nothing with trace id {trace_id}"
                assert all(len(entry["span_id"]) == 16 for entry in in_trace)
                assert any(entry.get("user_id") == user for entry in in_trace), name
                assert TEST_JWT_SECRET not in processes[name].logs()

            # Metrics arrive over OTLP too: RPC latency and codes per method from every service, at least.
            def rpc_metrics_from_all(receiver: OtlpReceiver) -> bool:
                services = receiver.metric_names().get("rpc.server.duration", set())
                return {s.removeprefix("contentpipe-") for s in services} >= set(SERVICES)

            assert otlp.wait_for(rpc_metrics_from_all, timeout=15), otlp.metric_names()
            print(f"trace {trace_id}: {len(spans)} spans; metrics: {sorted(otlp.metric_names())}")
        finally:
            for proc in reversed(started):
                proc.terminate()
