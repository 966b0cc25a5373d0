"""Benchmark: end-to-end pipeline runs (generate → post) through the real pipelines service with zero-latency peer
fakes, next to a bare three-hop gRPC call chain measured in the same process (the floor).

    uv run python -m tests.pipelines.bench_runs --runs 300 [--database-url postgresql+psycopg://...]

Prints runs/s and p50/p99 run latency (queued → SUCCEEDED, from the run's own timestamps), the chain's calls/s
and p50/p99, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import grpc.aio
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc

from tests.pipelines.fakes import FakePeers
from tests.pipelines.integration.support import generate_step, post_step
from tests.support import ServiceProcess, bearer, free_port

CONCURRENCY = 64


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def bench_pipelines(address: str, user: str, connection: str, runs: int) -> tuple[float, list[float]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.PipelineServiceStub(channel)
        metadata = bearer(user)
        pipeline = pb.Pipeline(
            display_name="bench",
            steps=[generate_step(prompt="bench"), post_step([connection], caption="bench")],
        )
        created = (await stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=pipeline), metadata=metadata)).pipeline
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def queue_one() -> str:
            async with semaphore:
                response = await stub.RunPipeline(pb.RunPipelineRequest(name=created.name), metadata=metadata)
                return str(response.run.name)

        started = time.monotonic()
        await asyncio.gather(*(queue_one() for _ in range(runs)))
        while True:
            listed = await stub.ListPipelineRuns(
                pb.ListPipelineRunsRequest(parent=created.name, page_size=1000), metadata=metadata
            )
            if len(listed.runs) == runs and all(
                r.state in (pb.PIPELINE_RUN_STATE_SUCCEEDED, pb.PIPELINE_RUN_STATE_FAILED) for r in listed.runs
            ):
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        failed = [r for r in listed.runs if r.state != pb.PIPELINE_RUN_STATE_SUCCEEDED]
        if failed:
            raise SystemExit(f"{len(failed)} run(s) failed: {failed[0].error}")
        latencies = [(r.finish_time.ToNanoseconds() - r.create_time.ToNanoseconds()) / 1e9 for r in listed.runs]
        return runs / elapsed, latencies


async def bench_chain(calls: int) -> tuple[float, list[float]]:
    """client → A → B → C, each a grpc.aio server relaying raw bytes: the floor of three hops."""
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    def relay_to(next_address: str | None) -> grpc.GenericRpcHandler:  # type: ignore[type-arg]
        channel = grpc.aio.insecure_channel(next_address) if next_address else None
        if channel is not None:
            channels.append(channel)
            call = channel.unary_unary("/bench.Relay/Call")  # type: ignore[call-arg]

        async def handle(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            if channel is None:
                return request
            return await call(request)  # type: ignore[no-any-return]

        return grpc.method_handlers_generic_handler(
            "bench.Relay", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
        )

    address: str | None = None
    for _ in range(3):
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((relay_to(address),))
        port = free_port()
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        servers.append(server)
        address = f"127.0.0.1:{port}"
    assert address is not None
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary("/bench.Relay/Call")  # type: ignore[call-arg]
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with semaphore:
                begin = time.monotonic()
                await call(b"x" * 64)
                latencies.append(time.monotonic() - begin)

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(calls)))
        elapsed = time.monotonic() - started
    for ch in channels:
        await ch.close(None)
    for server in servers:
        await server.stop(0)
    return calls / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, FakePeers() as peers:
        url = args.database_url or f"sqlite+aiosqlite:///{scratch}/bench.db"
        service = ServiceProcess(
            "pipelines",
            Path(scratch) / "pipelines",
            database_url=url,
            env={
                **peers.env(),
                "PIPELINES_POLL_INITIAL_SECONDS": "0.01",
                "PIPELINES_POLL_MAX_SECONDS": "0.05",
                "PIPELINES_CLAIM_INTERVAL_SECONDS": "0.05",
                "PIPELINES_MAX_RUNS_PER_USER": "1000",
                "LOG_LEVEL": "WARNING",
            },
        ).start()
        try:
            user = f"bench-{uuid.uuid4().hex[:6]}"
            connection = peers.add_connection(user)
            # On the fakes' own event loop: grpc.aio wants one loop per process.
            runs_per_s, run_latencies = peers.run(bench_pipelines(service.address, user, connection, args.runs))
        except SystemExit:
            print("\n".join(line for line in service.logs().splitlines() if '"ERROR"' in line)[-6000:])
            raise
        finally:
            service.terminate()
    chain_per_s, chain_latencies = asyncio.run(bench_chain(args.runs * 5))
    print(
        f"pipelines ({url.split(':')[0]}): {args.runs} generate→post runs, {runs_per_s:.1f} runs/s, "
        f"p50 {statistics.median(run_latencies) * 1000:.0f} ms, p99 {percentile(run_latencies, 0.99) * 1000:.0f} ms"
    )
    print(
        f"bare 3-hop gRPC chain: {chain_per_s:.0f} calls/s, p50 {statistics.median(chain_latencies) * 1000:.1f} ms, "
        f"p99 {percentile(chain_latencies, 0.99) * 1000:.1f} ms"
    )
    latency_ratio = statistics.median(run_latencies) / statistics.median(chain_latencies)
    print(
        f"ratio: runs/s ÷ chain calls/s = {runs_per_s / chain_per_s:.3f}; "
        f"p50 run latency ÷ p50 chain latency = {latency_ratio:.0f}x"
    )


if __name__ == "__main__":
    main()
