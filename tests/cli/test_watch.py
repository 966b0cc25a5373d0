"""Following a run: Ctrl-C leaves the run going (and says how to come back), a service restart is ridden out,
the plain view ends with the run's own line, and the live view keeps paths whole at 80 columns."""

from __future__ import annotations

import contextlib
import io
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.generation.v1 import generation_service_pb2_grpc as gen_grpc
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from contentpipe.cli.watch import print_summary, render_table
from rich.console import Console

from tests.cli.fake_pipelines import RUN_NAME, FakePipelineService, run_at, succeeding_run_script
from tests.cli.harness import REPO_ROOT, cli_environ
from tests.support import free_port, mint_token
from tests.support.tokens import TEST_JWT_SECRET

pytestmark = pytest.mark.integration

LONG_PATH = "/home/someone/projects/contentpipe/.contentpipe/generated-content/local/0193abcdef0123456789/0.mp4"


@contextlib.contextmanager
def _sigint_caught() -> Iterator[None]:
    """A suite started in the background (`make test &`) inherits SIGINT ignored, and a child inherits an ignored
    signal; a caught one is reset to the default by exec. Catching it in this process while the CLI is spawned
    lets the child get Ctrl-C the way a terminal user's CLI does, with no `preexec_fn` (Python code between fork
    and exec makes CPython fork instead of vfork, which runs gRPC's at-fork handlers and can hang the child)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Lines:
    """A CLI subprocess whose merged stdout/stderr lines can be awaited one pattern at a time."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        with _sigint_caught():
            self.process = subprocess.Popen(
                [sys.executable, "-m", "contentpipe.cli", *args],
                cwd=REPO_ROOT,
                env=cli_environ(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        while True:
            line = self._queue.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"{needle!r} never came; output:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if needle in line:
                return line

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        code = self.process.wait(timeout=timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.seen.append(line)
        return code, "\n".join(self.seen)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def lines() -> Iterator[list[Lines]]:
    started: list[Lines] = []
    yield started
    for item in started:
        item.kill()


def _serve(servicer: FakePipelineService, port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_PipelineServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def _env(port: int) -> dict[str, str]:
    return {"CONTENTPIPE_PIPELINES_ADDR": f"127.0.0.1:{port}", "CONTENTPIPE_TOKEN": mint_token(TEST_JWT_SECRET, "u")}


def test_ctrl_c_stops_watching_and_says_the_run_goes_on(lines: list[Lines]) -> None:
    servicer = FakePipelineService(succeeding_run_script())  # type: ignore[abstract]
    servicer.advancing.clear()
    port = free_port()
    server = _serve(servicer, port)
    try:
        watch = Lines("runs", "watch", RUN_NAME, "--interval", "0.05", env=_env(port))
        lines.append(watch)
        watch.wait_for(f"run {RUN_NAME} QUEUED")
        watch.process.send_signal(signal.SIGINT)
        code, output = watch.finish()
    finally:
        server.stop(None)
    assert code == 130
    assert "the run goes on" in output
    assert f"contentpipe runs watch {RUN_NAME}" in output
    assert f"contentpipe runs cancel {RUN_NAME}" in output
    assert "Traceback" not in output


def test_watch_reconnects_across_a_service_restart(lines: list[Lines]) -> None:
    servicer = FakePipelineService(succeeding_run_script())  # type: ignore[abstract]
    servicer.advancing.clear()
    port = free_port()
    server = _serve(servicer, port)
    watch = Lines("runs", "watch", RUN_NAME, "--interval", "0.05", env=_env(port))
    lines.append(watch)
    try:
        watch.wait_for(f"run {RUN_NAME} QUEUED")
        server.stop(None).wait()
        watch.wait_for("reconnecting (attempt 1")
        server = _serve(servicer, port)
        servicer.advancing.set()
        watch.wait_for("reconnected")
        code, output = watch.finish()
    finally:
        server.stop(None)
    assert code == 0, output
    assert f"run {RUN_NAME} SUCCEEDED" in output


def test_plain_view_prints_the_run_end_after_its_last_step(lines: list[Lines]) -> None:
    servicer = FakePipelineService(succeeding_run_script())  # type: ignore[abstract]
    port = free_port()
    server = _serve(servicer, port)
    try:
        watch = Lines("runs", "watch", RUN_NAME, "--interval", "0.05", env=_env(port))
        lines.append(watch)
        code, output = watch.finish()
    finally:
        server.stop(None)
    assert code == 0, output
    events = [line.split(" ", 1)[1] for line in output.splitlines() if line[:2].isdigit()]
    assert events[0] == f"run {RUN_NAME} QUEUED"
    last_step = max(i for i, event in enumerate(events) if event.startswith("step "))
    assert events.index(f"run {RUN_NAME} SUCCEEDED") > last_step


def _failed_on_arrival() -> pb.PipelineRun:
    error = pb.StepError(reason="TEMPLATE_INVALID", message="steps.caption.txt is not an output")
    run = run_at(pb.PIPELINE_RUN_STATE_FAILED, [], error=error)
    run.finish_time.CopyFrom(run.create_time)
    return run


def test_a_run_that_failed_on_arrival_does_not_claim_it_took_zero_seconds() -> None:
    out = io.StringIO()
    print_summary(_failed_on_arrival(), out)
    assert f"run {RUN_NAME} FAILED\n" in out.getvalue()
    assert "0.0s" not in out.getvalue()


def test_live_view_at_80_columns_never_splits_a_path() -> None:
    asset = gen_pb.Asset(uri=f"file://{LONG_PATH}", content_type="video/mp4", width=320, height=240)
    step = pb.StepRun(
        step_id="video", state=pb.STEP_RUN_STATE_SUCCEEDED, attempts=1, outputs=pb.StepOutputs(assets=[asset])
    )
    run = run_at(pb.PIPELINE_RUN_STATE_SUCCEEDED, [step])
    screen = io.StringIO()
    Console(file=screen, width=80, force_terminal=True, color_system=None).print(render_table(run))
    print_summary(run, screen)
    shown = screen.getvalue().splitlines()
    assert any(LONG_PATH in line for line in shown)  # whole, in the summary
    fragments = [line for line in shown if "0.mp4" in line or "generated-content/" in line]
    assert all(LONG_PATH in line for line in fragments if "0.mp4" in line), fragments
    assert all(len(line) <= 80 for line in shown[: len(run.steps) + 2])


def test_the_summary_names_the_runs_trace() -> None:
    run = run_at(pb.PIPELINE_RUN_STATE_SUCCEEDED, [])
    run.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    out = io.StringIO()
    print_summary(run, out)
    assert "trace id: 4bf92f3577b34da6a3ce929d0e0e4736" in out.getvalue()


class EndlessGeneration(gen_grpc.GenerationServiceServicer):
    """A generation that stays RUNNING: the CLI waits until interrupted."""

    def CreateGeneration(
        self, request: gen_pb.CreateGenerationRequest, context: grpc.ServicerContext
    ) -> gen_pb.CreateGenerationResponse:
        return gen_pb.CreateGenerationResponse(generation=self._running())

    def GetGeneration(
        self, request: gen_pb.GetGenerationRequest, context: grpc.ServicerContext
    ) -> gen_pb.GetGenerationResponse:
        return gen_pb.GetGenerationResponse(generation=self._running())

    def _running(self) -> gen_pb.Generation:
        return gen_pb.Generation(name="generations/g1", state=gen_pb.GENERATION_STATE_RUNNING, progress=0.5)


def test_ctrl_c_while_a_generation_is_awaited_says_it_goes_on(lines: list[Lines]) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gen_grpc.add_GenerationServiceServicer_to_server(EndlessGeneration(), server)  # type: ignore[abstract]
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        token = mint_token(TEST_JWT_SECRET, "u")
        env = {"CONTENTPIPE_GENERATION_ADDR": f"127.0.0.1:{port}", "CONTENTPIPE_TOKEN": token}
        wait = Lines("generations", "create", "--kind", "text", "--prompt", "a caption", "--wait", env=env)
        lines.append(wait)
        wait.wait_for("generations/g1 RUNNING 50%")
        wait.process.send_signal(signal.SIGINT)
        code, output = wait.finish()
    finally:
        server.stop(None)
    assert code == 130
    assert "the generation goes on" in output
    assert "contentpipe generations get generations/g1" in output
    assert "contentpipe generations cancel generations/g1" in output
