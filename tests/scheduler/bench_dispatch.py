"""Due-job dispatch throughput of the scheduler on PostgreSQL, next to its baselines, in one run.

    uv run python -m tests.scheduler.bench_dispatch [--jobs 3000] [--procrastinate-python /path/to/python]

Measures, on one fresh database and against one fast fake pipelines endpoint (its own process):
- bare unary gRPC: RunPipeline with 64 calls in flight on one plain channel (no interceptors), minimal requests
  without metadata, and the same calls carrying what the scheduler's must (its fields, service token, request id);
- bare SKIP LOCKED: worker processes claiming and completing rows, 50 per statement;
- procrastinate: the same number of no-op tasks, 2 worker processes x 10 concurrency (if an interpreter with
  procrastinate is given; it is not a project dependency);
- the scheduler: 1, 2 and 4 worker processes running Processor.process until nothing is due (claim, plan, record,
  BatchRunPipelines per owner, record outcome: every job ends with a pipeline run on its record); and 2 workers
  sending one RunPipeline per run (SCHEDULER_TRIGGER_BATCH_SIZE=1), the dispatch before batching.
Prints jobs/s and the ratios. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH_JWT_SECRET = "bench-secret-that-is-at-least-32-bytes-long"


# ---------------------------------------------------------------- the fast fake pipelines endpoint


async def _fake_server(port: int) -> None:
    import grpc.aio
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    def queued(request: pb.RunPipelineRequest) -> pb.PipelineRun:
        return pb.PipelineRun(
            name=f"{request.name}/runs/{request.request_id[-12:]}", state=pb.PIPELINE_RUN_STATE_QUEUED
        )

    class Fast(pb_grpc.PipelineServiceServicer):
        async def RunPipeline(self, request: pb.RunPipelineRequest, context: Any) -> pb.RunPipelineResponse:
            return pb.RunPipelineResponse(run=queued(request))

        async def BatchRunPipelines(
            self, request: pb.BatchRunPipelinesRequest, context: Any
        ) -> pb.BatchRunPipelinesResponse:
            return pb.BatchRunPipelinesResponse(
                results=[pb.RunPipelineResult(run=queued(item)) for item in request.requests]
            )

        async def GetPipelineRun(self, request: pb.GetPipelineRunRequest, context: Any) -> pb.GetPipelineRunResponse:
            return pb.GetPipelineRunResponse(run=pb.PipelineRun(name=request.name, state=pb.PIPELINE_RUN_STATE_RUNNING))

    server = grpc.aio.server()
    pb_grpc.add_PipelineServiceServicer_to_server(Fast(), server)  # type: ignore[abstract]
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


# ---------------------------------------------------------------- bare gRPC


async def _grpc_bare(address: str, seconds: float, in_flight: int, *, as_scheduler: bool = False) -> float:
    """RunPipeline calls/s with `in_flight` calls at once on one plain channel (no interceptors, no wrapper).

    `as_scheduler`: each call carries what the scheduler's must (its request's fields, a service token acting for
    the job's owner, the request id header), so the rate is that of the calls themselves without the scheduler's
    work around them; otherwise a minimal request without metadata."""
    import grpc.aio
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
    from contentpipe.common.channels import ServiceToken
    from contentpipe.common.context import REQUEST_ID_HEADER
    from google.protobuf.timestamp_pb2 import Timestamp

    token = ServiceToken(BENCH_JWT_SECRET, "scheduler")
    nominal = Timestamp(seconds=int(time.time()) // 60 * 60)

    def call(i: int, n: int) -> tuple[pb.RunPipelineRequest, tuple[tuple[str, str], ...] | None]:
        if not as_scheduler:
            return pb.RunPipelineRequest(name="pipelines/p", request_id=f"b{i}-{n}"), None
        request_id = f"scheduler-bench-{i:06d}-{n:024x}-a1"  # the shape of the scheduler's run_request_id
        request = pb.RunPipelineRequest(
            name="pipelines/p", request_id=request_id, job=f"jobs/bench-{i:06d}", nominal_time=nominal
        )
        return request, (*token.peer_call_metadata(f"user-{i % 50}"), (REQUEST_ID_HEADER, request_id))

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.PipelineServiceStub(channel)
        done = 0
        deadline = time.perf_counter() + seconds

        async def caller(i: int) -> None:
            nonlocal done
            n = 0
            while time.perf_counter() < deadline:
                request, metadata = call(i, n)
                await stub.RunPipeline(request, metadata=metadata, timeout=10)
                n += 1
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(in_flight)))
        return done / (time.perf_counter() - start)


# ---------------------------------------------------------------- bare SKIP LOCKED


def _skip_locked_worker(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            rows = conn.execute(
                "UPDATE bench_queue SET state = 'done' WHERE id IN (SELECT id FROM bench_queue WHERE state = 'todo' "
                "ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED) RETURNING id"
            ).fetchall()
            if not rows:
                return


def _skip_locked(dsn: str, jobs: int, workers: int) -> float:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_queue")
        conn.execute("CREATE TABLE bench_queue (id serial PRIMARY KEY, state text NOT NULL)")
        conn.execute("INSERT INTO bench_queue (state) SELECT 'todo' FROM generate_series(1, %s)", (jobs,))
    procs = [_spawn("skip-locked-worker", dsn) for _ in range(workers)]
    start = time.perf_counter()
    _go_and_wait(procs)
    return jobs / (time.perf_counter() - start)


# ---------------------------------------------------------------- the scheduler


async def _seed_scheduler(db_url: str, jobs: int) -> None:
    from contentpipe.common.database import create_engine, db_now, run_migrations, session_factory
    from contentpipe.scheduler import bootstrap
    from contentpipe.scheduler.adapters.tables import job_runs
    from contentpipe.scheduler.adapters.tables import jobs as jobs_table
    from sqlalchemy import delete, insert

    await run_migrations(db_url, bootstrap.MIGRATIONS, bootstrap.VERSION_TABLE)
    engine = create_engine(db_url)
    async with session_factory(engine)() as session, session.begin():
        now = await db_now(session)
        await session.execute(delete(job_runs))
        await session.execute(delete(jobs_table))
        rows = [
            {
                "id": f"bench-{i:06d}",
                "owner": f"user-{i % 50}",
                "pipeline": "pipelines/p",
                "display_name": "",
                "cron_expression": "*/5 * * * *",
                "time_zone": "Europe/Berlin",
                "state": 1,
                "state_reason": "",
                "state_reason_code": "",
                "next_fire_time": now.replace(second=0, microsecond=0),
                "last_outcome": 0,
                "consecutive_failures": 0,
                "deactivations": 0,
                "failure_notified": False,
                "max_retries": 3,
                "initial_backoff_s": 60.0,
                "backoff_multiplier": 2.0,
                "max_backoff_s": 3600.0,
                "misfire_policy": 1,
                "max_catch_up_runs": 10,
                "overlap_policy": 1,
                "period_s": 300.0,
                "missed_count": 0,
                "skipped_count": 0,
                "triggered_count": 0,
                "create_time": now,
                "update_time": now,
                "version": 1,
            }
            for i in range(jobs)
        ]
        for start in range(0, len(rows), 1000):
            await session.execute(insert(jobs_table), rows[start : start + 1000])
    await engine.dispose()


async def _scheduler_worker(db_url: str, pipelines: str, trigger_batch_size: str) -> None:
    from contentpipe.common.cli import settle_heap
    from contentpipe.scheduler import bootstrap
    from contentpipe.scheduler.config import load_config

    settle_heap()  # as `contentpipe-scheduler serve` does once its modules are imported
    env = {
        "CONTENTPIPE_JWT_SECRET": BENCH_JWT_SECRET,
        "SCHEDULER_DATABASE_URL": db_url,
        "CONTENTPIPE_PIPELINES_ADDR": pipelines,
        "SCHEDULER_TRIGGER_BATCH_SIZE": trigger_batch_size,
    }
    components = bootstrap.build(load_config(env))
    await components.store.ping()
    await components.pipelines.check_reachable()
    sys.stdin.readline()  # go
    started = time.time()
    cpu_started = time.process_time()
    triggered = 0
    while True:
        result = await components.processor.process(2000)
        triggered += result.triggered
        if result.claimed == 0:
            break
    cpu = time.process_time() - cpu_started
    print(json.dumps({"triggered": triggered, "start": started, "end": time.time(), "cpu": cpu}), flush=True)
    await components.close()


async def _count_dispatched(db_url: str) -> int:
    from contentpipe.common.database import create_engine
    from sqlalchemy import text

    engine = create_engine(db_url)
    async with engine.connect() as conn:
        value = (
            await conn.execute(text("SELECT count(*) FROM scheduler_job_runs WHERE pipeline_run <> ''"))
        ).scalar_one()
    await engine.dispose()
    return int(value)


def _scheduler(db_url: str, pipelines: str, jobs: int, workers: int, *, trigger_batch_size: int = 100) -> float:
    """Jobs/s of `workers` scheduler processes; `trigger_batch_size` 1 sends one RunPipeline per run instead of
    BatchRunPipelines calls of up to that many runs of one owner (the default, as deployed)."""
    asyncio.run(_seed_scheduler(db_url, jobs))
    procs = [_spawn("scheduler-worker", db_url, pipelines, str(trigger_batch_size)) for _ in range(workers)]
    _go_and_wait(procs)
    # From the first worker's start to the last worker's end of processing (not process start-up/exit).
    reports = [json.loads(p.stdout.read().strip().splitlines()[-1]) for p in procs if p.stdout is not None]
    elapsed = float(max(r["end"] for r in reports) - min(r["start"] for r in reports))
    dispatched = asyncio.run(_count_dispatched(db_url))
    if dispatched != jobs:
        raise SystemExit(f"scheduler dispatched {dispatched} of {jobs}")
    return jobs / elapsed


# ---------------------------------------------------------------- procrastinate (optional, its own interpreter)

_PROCRASTINATE = r"""
import asyncio, sys, time, multiprocessing
import procrastinate
dsn, jobs, procs, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
@app.task(name="noop")
async def noop():
    return None
async def prepare():
    async with app.open_async():
        try:
            await app.schema_manager.apply_schema_async()
        except Exception:
            pass
        for i in range(0, jobs, 500):
            await noop.batch_defer_async(*[{} for _ in range(min(500, jobs - i))])
async def work():
    async with app.open_async():
        await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)
def worker():
    asyncio.run(work())
if __name__ == "__main__":
    asyncio.run(prepare())
    start = time.perf_counter()
    ps = [multiprocessing.Process(target=worker) for _ in range(procs)]
    for p in ps: p.start()
    for p in ps: p.join()
    print(jobs / (time.perf_counter() - start))
"""


def _procrastinate(python: str, dsn: str, jobs: int) -> float:
    script = Path(tempfile.gettempdir()) / f"bench_procrastinate_{os.getpid()}.py"
    script.write_text(_PROCRASTINATE)
    out = subprocess.run(
        [python, str(script), dsn, str(jobs), "2", "10"], capture_output=True, text=True, timeout=600, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- plumbing


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.scheduler.bench_dispatch", *args],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _go_and_wait(procs: list[subprocess.Popen[str]]) -> None:
    time.sleep(2.5)  # let every worker import and connect before the clock starts
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        p.wait(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"worker failed with {p.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="run")
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--only-scheduler", action="store_true", help="skip the baselines (quick iterations)")
    parser.add_argument("--procrastinate-python", default=os.environ.get("BENCH_PROCRASTINATE_PYTHON", ""))
    args = parser.parse_args()
    if args.mode == "fake-server":
        asyncio.run(_fake_server(int(args.rest[0])))
        return
    if args.mode == "skip-locked-worker":
        sys.stdin.readline()
        _skip_locked_worker(args.rest[0])
        return
    if args.mode == "scheduler-worker":
        asyncio.run(_scheduler_worker(args.rest[0], args.rest[1], args.rest[2]))
        return

    sys.path.insert(0, str(REPO))
    from tests.support.ports import free_port
    from tests.support.postgres import create_database, drop_database

    name, db_url = create_database()
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.scheduler.bench_dispatch", "fake-server", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        fake.stdout.readline()
        address = f"127.0.0.1:{port}"
        results: dict[str, float] = {}
        results["grpc_bare_64"] = asyncio.run(_grpc_bare(address, 5.0, 64))
        results["grpc_as_scheduler_64"] = asyncio.run(_grpc_bare(address, 5.0, 64, as_scheduler=True))
        for workers in () if args.only_scheduler else (1, 4):
            results[f"skip_locked_{workers}w"] = _skip_locked(dsn, args.jobs * 5, workers)
        if args.procrastinate_python and not args.only_scheduler:
            results["procrastinate_2x10"] = _procrastinate(args.procrastinate_python, dsn, min(args.jobs, 2000))
        for workers in (1, 2, 4):
            results[f"scheduler_{workers}w"] = _scheduler(db_url, address, args.jobs, workers)
        results["scheduler_2w_single_calls"] = _scheduler(db_url, address, args.jobs, 2, trigger_batch_size=1)
        print(f"due-job dispatch benchmark, {args.jobs} jobs, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
        for key, value in results.items():
            print(f"  {key:22s} {value:9.0f} jobs/s")
        best = max(results[f"scheduler_{w}w"] for w in (1, 2, 4))
        print(f"  scheduler best / bare gRPC (64 in flight): {best / results['grpc_bare_64']:.2f}")
        print(f"  scheduler best / the scheduler's calls alone: {best / results['grpc_as_scheduler_64']:.2f}")
        single = results["scheduler_2w_single_calls"] / results["grpc_bare_64"]
        print(f"  scheduler 2w, one RunPipeline per run / bare gRPC: {single:.2f}")
        if "skip_locked_4w" in results:
            print(f"  scheduler best / bare SKIP LOCKED (4w):    {best / results['skip_locked_4w']:.2f}")
        if "procrastinate_2x10" in results:
            print(f"  scheduler best / procrastinate:            {best / results['procrastinate_2x10']:.2f}")
    finally:
        fake.terminate()
        fake.wait(timeout=10)
        drop_database(name)


if __name__ == "__main__":
    main()
