"""The benchmark rows. Each runs in its own process (one event loop for grpc.aio, bounded by the runner's timeout):

    python -m benchmarks.rows <scheduler|pipelines|generation|posting|footprint|grpc> [--smoke]

and prints its rows as one JSON line prefixed with `ROWS `. Every row works on its own private PostgreSQL database
(created here, dropped in `finally`), real service processes on free loopback ports, and loopback fakes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from benchmarks.harness import (
    REPO,
    SEED,
    STATE_DIR,
    Row,
    Sizes,
    percentile,
    procrastinate_python,
    rss_mb,
    temporal_python,
)
from benchmarks.hour import top_of_hour
from benchmarks.media import media
from tests.support import ServiceProcess, bearer
from tests.support.postgres import fresh_database

QUIET = {"LOG_LEVEL": "WARNING"}


_DATABASE_URL = ""


@contextmanager
def private_database() -> Iterator[str]:
    """The row's database: the one the runner created for it (and drops), else a fresh one dropped here."""
    if _DATABASE_URL:
        yield _DATABASE_URL
        return
    with fresh_database() as url:
        yield url


def cpu_seconds(proc: ServiceProcess) -> float:
    """User + system CPU seconds the service process has used so far (/proc/<pid>/stat)."""
    assert proc.process is not None
    fields = Path(f"/proc/{proc.process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchService(ServiceProcess):
    """A ServiceProcess that, with BENCH_PROFILE_DIR set, runs under `py-spy record` (raw collapsed stacks in
    `$BENCH_PROFILE_DIR/<service>-<port>.txt`; summarise with `python -m benchmarks.profile FILE`). RSS numbers of
    a profiled run are meaningless (the pid is py-spy's)."""

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> ServiceProcess:
        profile_dir = os.environ.get("BENCH_PROFILE_DIR", "")
        if not profile_dir:
            return super().start(wait=wait, timeout=timeout)
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = Path(profile_dir) / f"{self.service}-{self.port}.txt"
        pyspy = os.environ.get("BENCH_PYSPY", str(STATE_DIR / "tools" / "bin" / "py-spy"))
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [pyspy, "record", "-f", "raw", "-r", os.environ.get("BENCH_PYSPY_RATE", "100"), "--nonblocking",
                 "-o", str(out), "--", sys.executable, "-m", self.module, *self.args],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        if wait:
            self.wait_serving(timeout=timeout)
        return self

    def terminate(self, timeout: float = 15.0) -> int:
        if os.environ.get("BENCH_PROFILE_DIR") and self.process is not None and self.process.poll() is None:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
            for pid in children.read_text().split() if children.exists() else []:
                os.kill(int(pid), signal.SIGTERM)  # the service; py-spy writes its file when it exits
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        return super().terminate(timeout)


@contextmanager
def services(*procs: ServiceProcess) -> Iterator[None]:
    """Start all (in parallel), wait until each is SERVING, terminate all at the end."""
    try:
        for proc in procs:
            proc.start(wait=False)
        for proc in procs:
            proc.wait_serving(timeout=180)  # four services importing at once on 2 shared cores
        yield
    finally:
        for proc in reversed(procs):
            proc.terminate()


# ====================================================================== 1 scheduler dispatch


def scheduler(sizes: Sizes) -> list[Row]:
    from tests.scheduler import bench_dispatch as bd

    python, why = procrastinate_python(allow_install=not sizes.smoke)
    jobs = sizes.dispatch_jobs
    size = f"{jobs} due jobs, fake pipelines"
    rows = {
        w: Row(
            f"1.{w}w",
            f"scheduler dispatch, {w} worker{'s' if w > 1 else ''}",
            size,
            "jobs/s",
            baseline="procrastinate 2x10 no-op" if python else "",
            op=">=",
            target_value=2.0,
        )
        for w in (1, 2, 4)
    }
    vs_grpc = Row(
        "1.grpc",
        "scheduler best vs unary gRPC",
        f"{jobs} jobs vs RunPipeline@64",
        "jobs/s",
        baseline="bare unary gRPC @64",
        op=">=",
        target_value=0.5,
    )
    vs_calls = Row(
        "1.calls",
        "scheduler best vs its calls alone",
        f"{jobs} jobs vs RunPipeline@64 as sent",
        "jobs/s",
        baseline="unary gRPC @64, scheduler's request+auth",
    )
    single = Row(
        "1.single",
        "scheduler 2w, one RunPipeline per run",
        f"{jobs} jobs vs RunPipeline@64",
        "jobs/s",
        baseline="bare unary gRPC @64",
    )
    vs_floor = Row(
        "1.floor",
        "scheduler best vs SKIP LOCKED",
        f"{jobs} jobs vs {sizes.skip_locked_jobs} rows",
        "jobs/s",
        baseline="bare SKIP LOCKED 4w x50",
    )
    if not python:
        for row in rows.values():
            row.note = f"no procrastinate baseline: {why}"
    with private_database() as db_url:
        dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
        port = _free_port()
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
            if not sizes.smoke:
                bd._scheduler(db_url, address, min(jobs, 200), 1)  # warm-up: imports, plans, PostgreSQL caches
            for _ in range(sizes.repeat):
                vs_grpc.baseline_samples.append(asyncio.run(bd._grpc_bare(address, sizes.grpc_seconds, 64)))
                vs_calls.baseline_samples.append(
                    asyncio.run(bd._grpc_bare(address, sizes.grpc_seconds, 64, as_scheduler=True))
                )
                vs_floor.baseline_samples.append(bd._skip_locked(dsn, sizes.skip_locked_jobs, 4))
                if python:
                    try:
                        value = bd._procrastinate(python, dsn, sizes.procrastinate_jobs)
                    except subprocess.SubprocessError as exc:
                        for row in rows.values():
                            row.note = f"procrastinate failed: {exc}"
                    else:
                        for row in rows.values():
                            row.baseline_samples.append(value)
                best = 0.0
                for workers, row in rows.items():
                    value = bd._scheduler(db_url, address, jobs, workers)
                    row.samples.append(value)
                    best = max(best, value)
                vs_grpc.samples.append(best)
                vs_calls.samples.append(best)
                vs_floor.samples.append(best)
                single.baseline_samples.append(vs_grpc.baseline_samples[-1])
                single.samples.append(bd._scheduler(db_url, address, jobs, 2, trigger_batch_size=1))
        finally:
            fake.terminate()
            fake.wait(timeout=10)
    return [*rows.values(), vs_grpc, vs_calls, single, vs_floor]


def _free_port() -> int:
    from tests.support.ports import free_port

    return free_port()


# ====================================================================== 2 pipeline end to end


def pipelines(sizes: Sizes) -> list[Row]:
    from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
    from contentpipe.api.oauth.v1 import connection_service_pb2 as conn_pb
    from contentpipe.api.oauth.v1 import connection_service_pb2_grpc as conn_grpc
    from contentpipe.api.oauth.v1 import platform_pb2

    from tests.pipelines import bench_runs
    from tests.pipelines.integration.support import generate_step, post_step

    c1 = Row(
        "2.c1",
        "pipeline run latency p50, c=1",
        f"generate TEXT->post outbox, {sizes.runs_c1} runs",
        "ms",
        baseline="3-hop grpc.aio chain p50 @1",
        op="<=",
        target_value=10.0,
    )
    c64 = Row(
        "2.c64",
        "pipeline runs/s, c=64",
        f"generate TEXT->post outbox, {sizes.runs_c64} runs",
        "runs/s",
        baseline="3-hop chain calls/s @64",
        op=">=",
        target_value=0.1,
    )
    p99 = Row("2.p99", "pipeline run latency p99, c=64", f"{sizes.runs_c64} runs", "ms", baseline="3-hop chain p99 @64")
    with tempfile.TemporaryDirectory() as scratch, private_database() as db_url:
        work = Path(scratch)
        procs = {
            name: BenchService(name, work / name, database_url=db_url, env=dict(QUIET))
            for name in ("generation", "oauth", "pipelines")
        }
        addresses = {f"CONTENTPIPE_{n.upper()}_ADDR": p.address for n, p in procs.items()}
        for proc in procs.values():
            proc.env.update({**addresses, "CONTENTPIPE_ALLOW_PRIVATE_URLS": "1"})
        procs["generation"].env.update(
            {"GENERATION_LOCAL_CONCURRENCY": "64", "GENERATION_WORKER_POLL_INTERVAL": "100ms"}
        )
        procs["oauth"].env.update({"OAUTH_POSTING_POLL_INTERVAL": "50ms", "OAUTH_POSTING_CONCURRENCY": "16"})
        procs["pipelines"].env.update(
            {
                "PIPELINES_POLL_INITIAL_SECONDS": "0.01",
                "PIPELINES_POLL_MAX_SECONDS": "0.05",
                "PIPELINES_CLAIM_INTERVAL_SECONDS": "0.05",
                "PIPELINES_MAX_RUNS_PER_USER": "1000",
            }
        )
        user = f"bench-{uuid.uuid4().hex[:6]}"
        with services(*procs.values()):
            import grpc

            with grpc.insecure_channel(procs["oauth"].address) as oauth:
                connection = (
                    conn_grpc.ConnectionServiceStub(oauth)
                    .CompleteConnection(
                        conn_pb.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX), metadata=bearer(user)
                    )
                    .connection.name
                )
            steps = [
                generate_step("text", kind=gen_pb.GENERATION_KIND_TEXT, prompt="bench {{ run.trigger_date }}"),
                post_step([connection], media="", caption="{{ steps.text.text }}"),
            ]

            cpu: dict[str, list[float]] = {n: [] for n in procs}

            async def measure() -> None:
                pipeline = await _create_pipeline(procs["pipelines"].address, user, steps)
                await _runs(procs["pipelines"].address, user, pipeline, 2, 2)  # warm-up
                for _ in range(sizes.repeat):
                    _, lat1 = await _runs(procs["pipelines"].address, user, pipeline, sizes.runs_c1, 1)
                    c1.samples.append(statistics.median(lat1) * 1000)
                    before = {n: cpu_seconds(p) for n, p in procs.items()}
                    rate, lat64 = await _runs(procs["pipelines"].address, user, pipeline, sizes.runs_c64, 64)
                    for n, p in procs.items():
                        cpu[n].append((cpu_seconds(p) - before[n]) * 1000 / sizes.runs_c64)
                    c64.samples.append(rate)
                    p99.samples.append(percentile(lat64, 0.99) * 1000)
                    bench_runs.CONCURRENCY = 1
                    _, chain1 = await bench_runs.bench_chain(sizes.chain_calls_c1)
                    bench_runs.CONCURRENCY = 64
                    chain_rate, chain64 = await bench_runs.bench_chain(sizes.chain_calls_c64)
                    c1.baseline_samples.append(statistics.median(chain1) * 1000)
                    c64.baseline_samples.append(chain_rate)
                    p99.baseline_samples.append(percentile(chain64, 0.99) * 1000)

            asyncio.run(measure())
        temporal = _temporal_rows(sizes, db_url, c1, c64)
    c64.extra["cpu_ms_per_run"] = {n: statistics.median(v) for n, v in cpu.items() if v}
    c64.note = (
        "CPU per run at c=64: "
        + ", ".join(f"{n} {statistics.median(v):.0f} ms" for n, v in cpu.items() if v)
        + "; chain = tests/pipelines/bench_runs.bench_chain (three grpc.aio servers in the harness process)"
    )
    return [c1, c64, p99, *temporal]


def _temporal_rows(sizes: Sizes, db_url: str, c1: Row, c64: Row) -> list[Row]:
    """Our c=1 p50 and c=64 runs/s against Temporal's (default and tuned dev server) measured right after ours on
    the same machine, plus the absolute p50 target. Skipped in the smoke (it must not need Temporal)."""
    runs = f"generate TEXT->post outbox vs 2-activity workflow, {sizes.runs_c1} runs"
    rows = {
        "2.c1abs": Row("2.c1abs", "pipeline run latency p50, c=1 (absolute)", runs, "ms", op="<=",
                       target_value=50.0, target_on="value"),
        "2.t1": Row("2.t1", "pipeline p50 c=1 vs Temporal", runs, "ms",
                    baseline="Temporal dev server p50 @1 (default)", op="<=", target_value=1 / 3),
        "2.t1tuned": Row("2.t1tuned", "pipeline p50 c=1 vs Temporal tuned", runs, "ms",
                         baseline="Temporal p50 @1 (transferProcessorMaxPollRPS=1000)", op="<=", target_value=0.5),
        "2.t64": Row("2.t64", "pipeline runs/s c=64 vs Temporal", f"{sizes.runs_c64} runs", "runs/s",
                     baseline="Temporal runs/s @64 (default)", op=">=", target_value=4.0),
        "2.t64tuned": Row("2.t64tuned", "pipeline runs/s c=64 vs Temporal tuned", f"{sizes.runs_c64} runs", "runs/s",
                          baseline="Temporal runs/s @64 (tuned)", op=">=", target_value=4.0),
    }  # fmt: skip
    for row in rows.values():
        row.samples = list((c64 if row.unit == "runs/s" else c1).samples)
    compared = [rows[key] for key in ("2.t1", "2.t1tuned", "2.t64", "2.t64tuned")]
    if sizes.smoke:
        return [rows["2.c1abs"]]
    python, why = temporal_python(allow_install=True)
    if not python:
        for row in compared:
            row.note = f"no Temporal baseline: {why}"
        return list(rows.values())
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    for tuned in (False, True):
        command = [python, str(REPO / "benchmarks" / "temporal_baseline.py"), "--dsn", dsn]
        done = subprocess.run(
            [*command, *(["--tuned"] if tuned else [])], capture_output=True, text=True, timeout=900, check=False
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        suffix = "tuned" if tuned else ""
        if not lines:
            for key in (f"2.t1{suffix}", f"2.t64{suffix}"):
                rows[key].note = f"Temporal baseline failed: {done.stderr.strip()[-300:]}"
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        rows[f"2.t1{suffix}"].baseline_samples.append(result["p50_c1_ms"])
        rows[f"2.t64{suffix}"].baseline_samples.append(result["runs_per_s_c64"])
        rows[f"2.t64{suffix}"].extra["temporal_p99_c64_ms"] = result["p99_c64_ms"]
    return list(rows.values())


async def _create_pipeline(address: str, user: str, steps: Sequence[object]) -> str:
    import grpc.aio
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.PipelineServiceStub(channel)
        created = await stub.CreatePipeline(
            pb.CreatePipelineRequest(pipeline=pb.Pipeline(display_name="bench", steps=steps)),  # type: ignore[arg-type]
            metadata=bearer(user),
            timeout=10,
        )
        return str(created.pipeline.name)


async def _runs(address: str, user: str, pipeline: str, runs: int, concurrency: int) -> tuple[float, list[float]]:
    """`concurrency` clients each start a run and wait for it (WaitPipelineRun, the long poll a client uses; Temporal's
    baseline waits on its workflow handle the same way) until `runs` are done. Latency comes from the run's own
    create_time/finish_time. Returns runs/s and latencies."""
    import grpc.aio
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
    from google.protobuf.duration_pb2 import Duration

    terminal = (pb.PIPELINE_RUN_STATE_SUCCEEDED, pb.PIPELINE_RUN_STATE_FAILED, pb.PIPELINE_RUN_STATE_CANCELED)
    metadata = bearer(user)
    latencies: list[float] = []
    remaining = runs
    deadline = time.monotonic() + 120 + runs

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.PipelineServiceStub(channel)

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                run = (
                    await stub.RunPipeline(
                        pb.RunPipelineRequest(name=pipeline, request_id=uuid.uuid4().hex), metadata=metadata, timeout=60
                    )
                ).run
                while run.state not in terminal:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{run.name} not finished")
                    run = (
                        await stub.WaitPipelineRun(
                            pb.WaitPipelineRunRequest(name=run.name, timeout=Duration(seconds=20)),
                            metadata=metadata,
                            timeout=30,
                        )
                    ).run
                if run.state != pb.PIPELINE_RUN_STATE_SUCCEEDED:
                    raise RuntimeError(f"run {run.name} ended {pb.PipelineRunState.Name(run.state)}: {run.error}")
                latencies.append((run.finish_time.ToNanoseconds() - run.create_time.ToNanoseconds()) / 1e9)

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return runs / (time.monotonic() - started), latencies


# ====================================================================== 3 generation fan-out


def generation(sizes: Sizes) -> list[Row]:
    n, latency = sizes.generations, sizes.provider_latency
    wall = Row(
        "3.wall",
        "generation fan-out wall time",
        f"{n} concurrent TEXT, Replicate fake {latency:g} s",
        "s",
        baseline="one prediction on the fake",
        op="<=",
        target_value=3.0,
    )
    peak = Row(
        "3.rss",
        "generation peak RSS during fan-out",
        f"{n} concurrent",
        "MB",
        op="<=",
        target_value=300.0,
        target_on="value",
    )
    fake = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.fake_replicate", "--latency", str(latency)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().split()[-1]
        with tempfile.TemporaryDirectory() as scratch, private_database() as db_url:
            proc = BenchService(
                "generation",
                Path(scratch) / "generation",
                database_url=db_url,
                env={
                    **QUIET,
                    "GENERATION_DEFAULT_PROVIDER": "replicate",
                    "REPLICATE_BASE_URL": url,
                    "REPLICATE_API_TOKEN": "r8_test_token",
                    "REPLICATE_PREFER_WAIT_SECONDS": "10",
                    "REPLICATE_POLL_INITIAL": "100ms",
                    "REPLICATE_POLL_MAX": "300ms",
                    "GENERATION_REPLICATE_CONCURRENCY": str(max(n, 200)),
                    "GENERATION_REPLICATE_CREATES_PER_SECOND": "0",
                    "GENERATION_WORKER_MAX_IN_FLIGHT": str(max(n, 1000)),
                    "GENERATION_WORKER_POLL_INTERVAL": "100ms",
                    "CONTENTPIPE_ALLOW_PRIVATE_URLS": "1",
                },
            )
            with services(proc):
                assert proc.process is not None

                async def measure() -> None:
                    await _fan_out(proc.address, min(n, 20))  # warm-up
                    for _ in range(sizes.repeat):
                        wall.baseline_samples.append(await _one_prediction(url))
                        wall.samples.append(await _fan_out(proc.address, n))
                        assert proc.process is not None
                        peak.samples.append(rss_mb(proc.process.pid)[1])

                asyncio.run(measure())
    finally:
        if fake.stdin is not None:
            fake.stdin.close()
        fake.wait(timeout=15)
    peak.note = "peak = VmHWM of the generation process (cumulative over warm-up and repeats)"
    return [wall, peak]


async def _one_prediction(url: str) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer r8_test_token"}) as client:
        started = time.monotonic()
        response = await client.post(
            "/v1/models/meta/meta-llama-3-8b-instruct/predictions",
            json={"input": {"prompt": "one"}},
            headers={"Prefer": "wait=10"},
            timeout=30,
        )
        response.raise_for_status()
        return time.monotonic() - started


async def _fan_out(address: str, n: int) -> float:
    """Create n TEXT generations at once; seconds from just before the first create to the last finish_time (the
    service's own clock, same host), so the listing period does not add to it. A list of all of them every second:
    every 250 ms cost the service ~10 % of its CPU during the fan-out, and a WaitGeneration per generation about
    twice that (a first read of each row, then an answer per generation, plus the fallback re-reads every second)."""
    import grpc.aio
    from contentpipe.api.generation.v1 import generation_service_pb2 as pb
    from contentpipe.api.generation.v1 import generation_service_pb2_grpc as pb_grpc

    user = f"fan-{uuid.uuid4().hex[:6]}"
    metadata = bearer(user)
    rng = random.Random(SEED)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        started = time.monotonic()
        started_wall = time.time()
        finished = 0.0

        async def create(i: int) -> str:
            generation = pb.Generation(kind=pb.GENERATION_KIND_TEXT, prompt=f"caption {i} {rng.random():.6f}")
            response = await stub.CreateGeneration(
                pb.CreateGenerationRequest(generation=generation), metadata=metadata, timeout=30
            )
            return str(response.generation.name)

        names = await asyncio.gather(*(create(i) for i in range(n)))
        pending = set(names)
        deadline = started + 60 + n / 10
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} of {n} generations not finished")
            await asyncio.sleep(1.0)
            page = ""
            while True:
                listed = await stub.ListGenerations(
                    pb.ListGenerationsRequest(page_size=1000, page_token=page), metadata=metadata, timeout=30
                )
                for g in listed.generations:
                    if g.state == pb.GENERATION_STATE_SUCCEEDED:
                        if g.name in pending:
                            finished = max(finished, g.finish_time.ToNanoseconds() / 1e9)
                        pending.discard(g.name)
                    elif g.state in (pb.GENERATION_STATE_FAILED, pb.GENERATION_STATE_CANCELED):
                        raise RuntimeError(f"{g.name} ended {pb.GenerationState.Name(g.state)}: {g.error}")
                page = listed.next_page_token
                if not page:
                    break
        return finished - started_wall


# ====================================================================== 4 posting queue


def posting(sizes: Sizes) -> list[Row]:
    from contentpipe.common.database import run_migrations

    from tests.oauth.posting import bench_posting as bp
    from tests.oauth.posting.harness import MIGRATIONS, VERSION_TABLE

    row = Row(
        "4",
        "posting queue, 4 workers",
        f"{sizes.posts} posts, zero-latency publisher",
        "posts/s",
        baseline="bare claim_rows loop 4 procs",
    )
    with private_database() as url:
        asyncio.run(run_migrations(url, MIGRATIONS, VERSION_TABLE))
        if not sizes.smoke:
            asyncio.run(bp._fill(url, min(sizes.posts, 100)))
            bp._timed("worker", url, 4)  # warm-up
        for _ in range(sizes.repeat):
            asyncio.run(bp._fill(url, sizes.posts))
            row.samples.append(sizes.posts / bp._timed("worker", url, 4))
            asyncio.run(bp._fill(url, sizes.posts))
            row.baseline_samples.append(sizes.posts / bp._timed("bare", url, 4))
    row.note = "tests/oauth/posting/bench_posting (real PostingWorker); times include worker process start-up"
    return [row]


# ====================================================================== 5 footprint


def footprint(sizes: Sizes) -> list[Row]:
    names = ("generation", "oauth", "pipelines", "scheduler")
    startup = {
        n: Row(
            f"5.{n}.up",
            f"{n} start-up to SERVING",
            "fresh process, migrated PG",
            "s",
            baseline="bare echo server",
            op="<=",
            target_value=3.0,
            target_on="value",
        )
        for n in names
    }
    idle = {
        n: Row(
            f"5.{n}.rss",
            f"{n} idle RSS",
            f"after {sizes.idle_seconds:g} s idle",
            "MB",
            baseline="bare echo server",
            op="<=",
            target_value=120.0,
            target_on="value",
        )
        for n in names
    }
    with tempfile.TemporaryDirectory() as scratch, private_database() as db_url:
        work = Path(scratch)

        def measure(service: str, module: str | None) -> tuple[float, float]:
            proc = ServiceProcess(
                service,
                work / f"{module or service}",
                database_url=db_url,
                module=module,
                env={**QUIET, "CONTENTPIPE_ALLOW_PRIVATE_URLS": "1"},
            )
            try:
                started = time.monotonic()
                proc.start(wait=False)
                proc.wait_serving(timeout=60)
                up = time.monotonic() - started
                time.sleep(sizes.idle_seconds)  # noqa: TID251 - sync code, no event loop here
                assert proc.process is not None
                return up, rss_mb(proc.process.pid)[0]
            finally:
                proc.terminate()

        for name in names if not sizes.smoke else ():  # warm-up: migrations once, bytecode and page cache warm
            measure(name, None)
        base_up: list[float] = []
        base_rss: list[float] = []
        for _ in range(sizes.repeat):
            up, rss = measure("pipelines", "benchmarks.echo_server")
            base_up.append(up)
            base_rss.append(rss)
            for name in names:
                up, rss = measure(name, None)
                startup[name].samples.append(up)
                idle[name].samples.append(rss)
    for name in names:
        startup[name].baseline_samples = list(base_up)
        idle[name].baseline_samples = list(base_rss)
    return [*startup.values(), *idle.values()]


# ====================================================================== 6 gRPC overhead


def grpc_overhead(sizes: Sizes) -> list[Row]:

    from tests.pipelines.integration.support import generate_step

    qps = Row(
        "6.qps",
        "GetPipeline QPS @64 in flight",
        f"{sizes.unary_seconds:g} s, real pipelines on PG",
        "calls/s",
        baseline="echo servicer, same server settings",
    )
    p50 = Row("6.p50", "GetPipeline p50 @64", "same calls", "ms", baseline="echo p50 @64")
    p99 = Row("6.p99", "GetPipeline p99 @64", "same calls", "ms", baseline="echo p99 @64")
    user = f"unary-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as scratch, private_database() as db_url:
        work = Path(scratch)
        # CreatePipeline validates a generate step with the generation service, so the row needs one to seed
        generation = BenchService("generation", work / "generation", database_url=db_url, env=dict(QUIET))
        real = BenchService(
            "pipelines",
            work / "pipelines",
            database_url=db_url,
            env={**QUIET, "CONTENTPIPE_GENERATION_ADDR": generation.address},
        )
        echo = ServiceProcess("pipelines", work / "echo", module="benchmarks.echo_server", env=dict(QUIET))
        with services(generation, real, echo):

            async def measure() -> None:
                name = await _create_pipeline(real.address, user, [generate_step(prompt="unary")])
                for address, target in ((real.address, name), (echo.address, "pipelines/echo")):
                    await _unary(address, user, target, min(0.5, sizes.unary_seconds))  # warm-up
                for _ in range(sizes.repeat):
                    for address, target, rows in (
                        (real.address, name, (qps.samples, p50.samples, p99.samples)),
                        (
                            echo.address,
                            "pipelines/echo",
                            (qps.baseline_samples, p50.baseline_samples, p99.baseline_samples),
                        ),
                    ):
                        rate, latencies = await _unary(address, user, target, sizes.unary_seconds)
                        rows[0].append(rate)
                        rows[1].append(statistics.median(latencies) * 1000)
                        rows[2].append(percentile(latencies, 0.99) * 1000)

            asyncio.run(measure())

    return [qps, p50, p99]


async def _unary(address: str, user: str, name: str, seconds: float) -> tuple[float, list[float]]:
    import grpc.aio
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
    from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc

    metadata = bearer(user)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.PipelineServiceStub(channel)
        request = pb.GetPipelineRequest(name=name)
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < deadline:
                begin = time.perf_counter()
                await stub.GetPipeline(request, metadata=metadata, timeout=60)
                latencies.append(time.perf_counter() - begin)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(64)))
        return len(latencies) / (time.perf_counter() - started), latencies


ROWS: dict[str, Callable[[Sizes], list[Row]]] = {
    "scheduler": scheduler,
    "pipelines": pipelines,
    "generation": generation,
    "posting": posting,
    "footprint": footprint,
    "grpc": grpc_overhead,
    "media": media,
    "hour": top_of_hour,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("row", choices=sorted(ROWS))
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeat", type=int, default=0)
    parser.add_argument("--database-url", default="", help="a private PostgreSQL database (default: create one)")
    args = parser.parse_args()
    global _DATABASE_URL
    _DATABASE_URL = args.database_url
    random.seed(SEED)
    sizes = Sizes.tiny() if args.smoke else Sizes.full()
    if args.repeat:
        from dataclasses import replace

        sizes = replace(sizes, repeat=args.repeat)
    rows = ROWS[args.row](sizes)
    print("ROWS " + json.dumps([r.to_json() for r in rows]), flush=True)


if __name__ == "__main__":
    main()
