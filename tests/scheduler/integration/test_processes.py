"""The scheduler as processes: acceptance through grpcurl, `tick` exit codes, and tick/serve racing on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from contentpipe.common.database import create_engine
from contentpipe.scheduler.adapters.tables import jobs
from sqlalchemy import update

from tests.scheduler.conftest import clean_database, scheduler_env
from tests.scheduler.fake_pipelines import FakePipelines
from tests.support import TEST_JWT_SECRET, ServiceProcess, free_port, mint_token
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.integration
SCHEDULER = "contentpipe.api.scheduler.v1.SchedulerService"


def grpcurl(address: str, method: str, body: Mapping[str, object], user: str = "user-1") -> dict[str, object]:
    binary = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    token = mint_token(TEST_JWT_SECRET, user)
    result = subprocess.run(
        [binary, "-plaintext", "-H", f"authorization: Bearer {token}", "-d", json.dumps(body), address, method],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        return {"error": result.stderr}
    return dict(json.loads(result.stdout or "{}"))


def tick(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "contentpipe.scheduler", "tick", *extra],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(240)
async def test_acceptance_every_minute_in_new_york_fires_once_per_tick(
    database_url: str, fake_pipelines: FakePipelines, start_service, tmp_path: Path
) -> None:
    await clean_database(database_url)
    fake_pipelines.add_pipeline("pipelines/p1", "user-1")
    fake_pipelines.add_pipeline("pipelines/theirs", "user-2")
    env = scheduler_env(database_url, fake_pipelines.address, SCHEDULER_PROCESS_INTERVAL="1h")
    proc: ServiceProcess = start_service("scheduler", database_url=database_url, env=env)
    address = proc.address

    created = grpcurl(
        address,
        f"{SCHEDULER}/CreateJob",
        {"job": {"pipeline": "pipelines/p1", "cron": {"expression": "*/1 * * * *", "time_zone": "America/New_York"}}},
    )
    job = created["job"]
    assert isinstance(job, dict) and job["state"] == "JOB_STATE_ACTIVE", created
    # From the job's creation, so that a minute boundary between the two calls does not move the first fire time.
    preview = grpcurl(
        address,
        f"{SCHEDULER}/PreviewSchedule",
        {
            "cron": {"expression": "*/1 * * * *", "time_zone": "America/New_York"},
            "count": 3,
            "start_time": job["createTime"],
        },
    )
    fire_times = preview["fireTimes"]
    assert isinstance(fire_times, list) and len(fire_times) == 3
    assert all(str(f["localTime"]).endswith(("-05:00", "-04:00")) for f in fire_times)
    first = datetime.fromisoformat(str(fire_times[0]["time"]).replace("Z", "+00:00"))
    assert first == datetime.fromisoformat(str(job["nextFireTime"]).replace("Z", "+00:00"))

    # Bad input is refused precisely.
    for body, needle in (
        ({"job": {"pipeline": "pipelines/p1", "cron": {"expression": "0 0 31 2 *"}}}, "job.cron.expression"),
        ({"job": {"pipeline": "pipelines/p1", "cron": {"expression": "* * * * *", "time_zone": "Nowhere/X"}}}, ""),
    ):
        answer = grpcurl(address, f"{SCHEDULER}/CreateJob", body)
        assert "InvalidArgument" in str(answer.get("error")), answer
        assert needle in str(answer.get("error"))
    other = grpcurl(
        address,
        f"{SCHEDULER}/CreateJob",
        {"job": {"pipeline": "pipelines/theirs", "cron": {"expression": "* * * * *"}}},
    )
    assert "NotFound" in str(other.get("error")), other

    while datetime.now(UTC) < first + timedelta(seconds=1):
        await asyncio.sleep(0.5)
    first_tick = await asyncio.to_thread(tick, env)
    assert first_tick.returncode == 0, first_tick.stderr
    assert json.loads(first_tick.stdout.strip().splitlines()[-1])["triggered"] == 1
    assert sum(fake_pipelines.state.run_calls.values()) == 1
    runs = grpcurl(address, f"{SCHEDULER}/ListJobRuns", {"parent": job["name"]})
    job_runs = runs["jobRuns"]
    assert isinstance(job_runs, list) and len(job_runs) == 1
    assert job_runs[0]["state"] == "JOB_RUN_STATE_TRIGGERED"
    assert job_runs[0]["nominalTime"] == fire_times[0]["time"]

    second_tick = await asyncio.to_thread(tick, env)
    assert second_tick.returncode == 0
    assert json.loads(second_tick.stdout.strip().splitlines()[-1])["triggered"] == 0
    assert sum(fake_pipelines.state.run_calls.values()) == 1


async def test_tick_exits_non_zero_when_pipelines_or_database_are_unreachable(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'tick.db'}"
    await clean_database(db)
    down = tick(scheduler_env(db, f"127.0.0.1:{free_port()}"))
    assert down.returncode == 3, down.stderr
    assert "unreachable" in down.stderr
    with FakePipelines() as fake:
        bad_db = tick(scheduler_env("postgresql+psycopg://postgres@127.0.0.1:1/nope", fake.address))
        assert bad_db.returncode == 1, bad_db.stderr
        ok = tick(scheduler_env(db, fake.address))
        assert ok.returncode == 0, ok.stderr


@pytest.mark.timeout(300)
async def test_two_ticks_and_a_serve_loop_fire_each_of_1000_jobs_exactly_once(
    postgres_url: str, fake_pipelines: FakePipelines, start_service
) -> None:
    await clean_database(postgres_url)
    fake_pipelines.add_pipeline("pipelines/p1", "user-1")
    env = scheduler_env(postgres_url, fake_pipelines.address)
    # Create 1,000 one-off jobs through the service layer (fast), then make them all due at one instant.
    from contentpipe.scheduler import bootstrap
    from contentpipe.scheduler.config import load_config
    from contentpipe.scheduler.service_layer.jobs import JobInput

    components = bootstrap.build(load_config(env))
    try:
        later = (await components.store.now()).replace(microsecond=0) + timedelta(hours=1)
        sem = asyncio.Semaphore(32)

        async def create(i: int) -> None:
            async with sem:
                await components.jobs.create_job(
                    "user-1", JobInput(pipeline="pipelines/p1", run_time=later), job_id=f"race-{i:04d}"
                )

        await asyncio.gather(*(create(i) for i in range(1000)))
        due = (await components.store.now()).replace(microsecond=0)
        engine = create_engine(postgres_url)
        async with engine.begin() as conn:
            await conn.execute(update(jobs).values(next_fire_time=due, run_time=due))
        await engine.dispose()
    finally:
        await components.close()

    racers_env = {**env, "SCHEDULER_BATCH_SIZE": "50", "SCHEDULER_PROCESS_INTERVAL": "200ms"}
    import os

    def start_tick() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "contentpipe.scheduler", "tick", "--limit", "10000"],
            cwd=REPO_ROOT,
            env={**os.environ, **racers_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    ticks = [start_tick(), start_tick()]
    server = start_service("scheduler", database_url=postgres_url, env=racers_env)
    outputs = [await asyncio.to_thread(t.communicate, timeout=240) for t in ticks]
    assert all(t.returncode == 0 for t in ticks), outputs
    deadline = time.monotonic() + 120
    while len(fake_pipelines.state.fire_calls) < 1000 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    server.terminate()

    calls = fake_pipelines.state.fire_calls
    assert len(calls) == 1000
    assert set(calls.values()) == {1}, [k for k, v in calls.items() if v != 1][:5]
    assert set(fake_pipelines.state.run_calls.values()) == {1}
    claimed = [json.loads(out.strip().splitlines()[-1])["triggered"] for out, _ in outputs]
    assert sum(claimed) <= 1000  # the serve loop took the rest
