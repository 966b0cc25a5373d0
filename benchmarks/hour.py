"""Row 8, top of the hour: many scheduled jobs due in the same minute, each a generate (local TEXT) → post (outbox)
pipeline, through the four real services on PostgreSQL. Measured from the fire time to the last post PUBLISHED;
the row fails (error) unless every run SUCCEEDED and every job published exactly one post.

The jobs are created through CreateJob and then made due by setting their next fire time to the database's now: the
row does not wait for a real minute boundary. Their cron (`0 0 1 1 *`) fires next far away, so a row that runs
across a real hour boundary measures one fire time per job (an hourly cron fired every job a second time there).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import grpc.aio
import psycopg
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.oauth.v1 import connection_service_pb2 as conn_pb
from contentpipe.api.oauth.v1 import connection_service_pb2_grpc as conn_grpc
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched_pb
from contentpipe.api.scheduler.v1 import scheduler_service_pb2_grpc as sched_grpc

from benchmarks.harness import Row, Sizes
from tests.pipelines.integration.support import generate_step, post_step
from tests.support import bearer

TARGET_SECONDS = 60.0
# Next real fire time months away: only the fire time the row makes due runs during the row.
CRON = "0 0 1 1 *"


def top_of_hour(sizes: Sizes) -> list[Row]:
    from benchmarks.rows import QUIET, BenchService, _create_pipeline, private_database, services

    jobs = sizes.hour_jobs
    row = Row(
        "8.hour",
        "top of the hour: fire time -> last post PUBLISHED",
        f"{jobs} jobs due at once, generate TEXT->post outbox",
        "s",
        op="<=",
        target_value=TARGET_SECONDS,
        target_on="value",
    )
    with tempfile.TemporaryDirectory() as scratch, private_database() as db_url:
        work = Path(scratch)
        procs = {
            name: BenchService(name, work / name, database_url=db_url, env=dict(QUIET))
            for name in ("generation", "oauth", "pipelines", "scheduler")
        }
        addresses = {f"CONTENTPIPE_{n.upper()}_ADDR": p.address for n, p in procs.items()}
        for proc in procs.values():
            proc.env.update({**addresses, "CONTENTPIPE_ALLOW_PRIVATE_URLS": "1"})
        procs["generation"].env.update({"GENERATION_LOCAL_CONCURRENCY": "64"})
        procs["oauth"].env.update({"OAUTH_POSTING_CONCURRENCY": "32"})
        procs["pipelines"].env.update({"PIPELINES_MAX_RUNS_PER_USER": str(max(jobs, 20))})
        procs["scheduler"].env.update({"SCHEDULER_PROCESS_INTERVAL": "500ms"})
        user = f"hour-{uuid.uuid4().hex[:6]}"
        dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
        with services(*procs.values()):
            with grpc.insecure_channel(procs["oauth"].address) as oauth:
                connection = (
                    conn_grpc.ConnectionServiceStub(oauth)
                    .CompleteConnection(
                        conn_pb.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX), metadata=bearer(user)
                    )
                    .connection.name
                )
            steps = [
                generate_step("text", kind=gen_pb.GENERATION_KIND_TEXT, prompt="hour {{ run.trigger_date }}"),
                post_step([connection], media="", caption="{{ steps.text.text }}"),
            ]
            for _ in range(sizes.repeat):
                pipeline = asyncio.run(_create_pipeline(procs["pipelines"].address, user, steps))
                asyncio.run(_create_jobs(procs["scheduler"].address, user, pipeline, jobs))
                seconds, problem = _fire_and_wait(dsn, user, pipeline, jobs, deadline=max(300.0, jobs * 0.5))
                if problem:
                    row.error = problem
                    break
                row.samples.append(seconds)
    return [row]


async def _create_jobs(address: str, user: str, pipeline: str, count: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = sched_grpc.SchedulerServiceStub(channel)
        remaining = iter(range(count))

        async def creator() -> None:
            for _ in remaining:
                job = sched_pb.Job(pipeline=pipeline, cron=sched_pb.CronSchedule(expression=CRON))
                await stub.CreateJob(
                    sched_pb.CreateJobRequest(job=job, request_id=uuid.uuid4().hex), metadata=bearer(user), timeout=60
                )

        await asyncio.gather(*(creator() for _ in range(32)))


def _fire_and_wait(dsn: str, user: str, pipeline: str, jobs: int, deadline: float) -> tuple[float, str]:
    """Make the pipeline's jobs due now; wait until each has published its post. (seconds, problem or "")."""
    with psycopg.connect(dsn, autocommit=True) as db:
        fired = db.execute(
            "UPDATE scheduler_jobs SET next_fire_time = now() WHERE owner = %s AND pipeline = %s RETURNING now()",
            (user, pipeline),
        ).fetchall()
        if len(fired) != jobs:
            return 0.0, f"{len(fired)} of {jobs} jobs made due"
        fire_time = fired[0][0]
        pipeline_id = pipeline.removeprefix("pipelines/")
        give_up = time.monotonic() + deadline
        while True:
            published = db.execute(
                "SELECT count(*) FROM posts WHERE owner = %s AND state = 'PUBLISHED' AND create_time >= %s",
                (user, fire_time),
            ).fetchone()
            if published is not None and published[0] >= jobs:
                break
            if time.monotonic() > give_up:
                return 0.0, f"only {published[0] if published else 0} of {jobs} posts PUBLISHED after {deadline:.0f} s"
            time.sleep(0.5)  # noqa: TID251 - the row is a sync poller of the database
        last = db.execute(
            "SELECT max(published_time), count(*) FROM posts WHERE owner = %s AND create_time >= %s",
            (user, fire_time),
        ).fetchone()
        # A run records its end a moment after its post is PUBLISHED: wait for the runs before judging them.
        while True:
            runs = db.execute(
                "SELECT state, count(*) FROM pipeline_runs WHERE pipeline_id = %s GROUP BY state", (pipeline_id,)
            ).fetchall()
            if not {"QUEUED", "RUNNING"} & {state for state, _ in runs} or time.monotonic() > give_up:
                break
            time.sleep(0.5)  # noqa: TID251 - the row is a sync poller of the database
    assert last is not None
    states = dict(runs)
    if last[1] != jobs:
        return 0.0, f"{last[1]} posts for {jobs} jobs (a duplicate or a missing post)"
    if states != {"SUCCEEDED": jobs}:
        return 0.0, f"run states {states}, expected {jobs} SUCCEEDED"
    return (last[0] - fire_time).total_seconds(), ""
