"""The cog provider against the real Cog HTTP server from PyPI, running tests/fakes/cog_predictor in its own venv."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as pb

from tests.generation.support import GenerationClient
from tests.support import ServiceProcess, free_port
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.integration

COG_VERSION = "0.23.1"
PREDICTOR = REPO_ROOT / "tests" / "fakes" / "cog_predictor"


def cog_venv() -> Path:
    """A venv with `cog` from PyPI (built once per machine, reused); skip when it cannot be installed."""
    venv = Path(os.environ.get("CONTENTPIPE_COG_VENV", Path(tempfile.gettempdir()) / f"contentpipe-cog-{COG_VERSION}"))
    python = venv / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", "import cog"], capture_output=True, check=False).returncode == 0
    ):
        return venv
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build the Cog venv")
    made = subprocess.run([uv, "venv", "-q", "-p", "3.11", str(venv)], capture_output=True, text=True, check=False)
    installed = subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), f"cog=={COG_VERSION}"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if made.returncode or installed.returncode:
        pytest.skip(f"cannot install cog=={COG_VERSION}: {made.stderr}{installed.stderr}")
    return venv


@dataclass
class CogServer:
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def predictions(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture(scope="module")
def cog_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cog") / "out.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc2=s=320x192:r=8", "-frames:v", "16", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-y", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def big_cog_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MP4 over 5 MB (a constant 20 Mbit/s for 3 s): ~10 MB of base64 in Cog's webhook body."""
    path = tmp_path_factory.mktemp("cog-big") / "big.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
         "-i", "testsrc2=s=320x192:r=30", "-frames:v", "90", "-c:v", "libx264", "-preset", "ultrafast",
         "-b:v", "20M", "-minrate", "20M", "-maxrate", "20M", "-bufsize", "20M", "-x264-params", "nal-hrd=cbr",
         "-pix_fmt", "yuv420p", "-y", str(path)],
        check=True,
    )  # fmt: skip
    assert path.stat().st_size > 5 * 1024 * 1024
    return path


@pytest.fixture
def start_cog(tmp_path: Path, cog_video: Path) -> Iterator[Callable[..., CogServer]]:
    venv = cog_venv()
    servers: list[CogServer] = []

    def start(delay: float = 0.0, video: Path | None = None) -> CogServer:
        port = free_port()
        log = tmp_path / f"cog-{port}.log"
        env = {
            **os.environ,
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",  # the worker runs `python` from PATH
            "COG_PREDICT_TYPE_STUB": "predict.py:Predictor",
            "PORT": str(port),
            "COG_FAKE_VIDEO": str(video or cog_video),
            "COG_FAKE_LOG": str(log),
            "COG_FAKE_DELAY": str(delay),
        }
        env.pop("VIRTUAL_ENV", None)
        output = (tmp_path / f"cog-server-{port}.out").open("wb")
        process = subprocess.Popen(
            [str(venv / "bin" / "python"), "-m", "cog.server.http", "--host", "127.0.0.1"],
            cwd=PREDICTOR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        server = CogServer(f"http://127.0.0.1:{port}", log, process)
        servers.append(server)
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / f"cog-server-{port}.out").read_text()
            try:
                status = httpx.get(f"{server.url}/health-check", timeout=2).json().get("status")
                if status == "READY":
                    return server
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, "Cog server not READY"
            time.sleep(0.2)

    yield start
    for server in servers:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()


def test_local_acceptance_request_on_a_real_cog_server_succeeds(
    start_cog: Callable[..., CogServer], start_service: Callable[..., ServiceProcess]
) -> None:
    cog = start_cog()
    env = {"GENERATION_DEFAULT_PROVIDER": "cog", "COG_MODELS": f"svd-local:VIDEO={cog.url}"}
    service = start_service("generation", env=env)
    with GenerationClient(service.address) as client:
        created = client.create(
            kind=pb.GENERATION_KIND_VIDEO,
            prompt="a lighthouse at dusk",
            # model_input arrives as a protobuf Struct (numbers are doubles): 16 must reach Cog as an integer
            options={"width": 320, "height": 192, "fps": 8, "duration_seconds": 2, "seed": 7,
                     "model_input": {"num_frames": 16}},
        )  # fmt: skip
        done = client.wait(created.name)
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done.error
    (prediction,) = done.predictions
    assert (prediction.provider, prediction.model, prediction.status) == ("cog", "svd-local", "succeeded")
    assert prediction.id == f"{created.name.split('/')[1]}-video"
    (asset,) = done.outputs
    assert (asset.content_type, asset.width, asset.height, asset.frame_count, asset.fps) == (
        "video/mp4",
        320,
        192,
        16,
        8,
    )
    assert hashlib.sha256(Path(urlsplit(asset.uri).path).read_bytes()).hexdigest() == asset.sha256
    assert asset.metadata["provider"] == "cog"
    assert cog.predictions() == ["a lighthouse at dusk|320x192|8|16|7"]


def test_kill_9_during_an_async_cog_prediction_attaches_to_it_after_restart(
    start_cog: Callable[..., CogServer], tmp_path: Path
) -> None:
    # Long enough that the restarted service (slow to start on a loaded machine) PUTs again while the prediction
    # still runs: a PUT after it finished would run it again, which is what the test must not see.
    cog = start_cog(delay=15.0)
    env = {
        "GENERATION_DEFAULT_PROVIDER": "cog",
        "COG_MODELS": f"svd-local:VIDEO={cog.url}",
        "GENERATION_WORKER_ID": "worker-cog",
        "GENERATION_WEBHOOK_PORT": str(free_port()),  # async predictions, results by webhook
    }
    first = ServiceProcess("generation", tmp_path / "svc", env=env).start()
    try:
        with GenerationClient(first.address) as client:
            created = client.create(kind=pb.GENERATION_KIND_VIDEO, prompt="slow", options={"width": 320, "height": 192})
            deadline = time.monotonic() + 20
            while not cog.predictions():
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert first.process is not None
        first.process.kill()
        first.process.wait()
    finally:
        first.terminate()
    second = ServiceProcess("generation", tmp_path / "svc", env=env).start()
    try:
        with GenerationClient(second.address) as client:
            done = client.wait(created.name, timeout=60)
    finally:
        second.terminate()
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, (done.error, second.logs())
    assert len(cog.predictions()) == 1  # the second PUT with the same id attached; nothing ran twice


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cancel_stops_the_cog_prediction_and_stays_cancelled(
    mode: str, start_cog: Callable[..., CogServer], start_service: Callable[..., ServiceProcess]
) -> None:
    cog = start_cog(delay=4.0)
    env = {"GENERATION_DEFAULT_PROVIDER": "cog", "COG_MODELS": f"svd-local:VIDEO={cog.url}"}
    if mode == "async":
        env["GENERATION_WEBHOOK_PORT"] = str(free_port())
    service = start_service("generation", env=env)
    with GenerationClient(service.address) as client:
        created = client.create(kind=pb.GENERATION_KIND_VIDEO, prompt="stop me", options={"width": 320, "height": 192})
        deadline = time.monotonic() + 20
        while not cog.predictions():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        cancelled = client.cancel(created.name)
        assert cancelled.state == pb.GENERATION_STATE_CANCELED
        assert time.monotonic() - started < 3  # did not wait for the 4 s prediction
        # A sync Python predictor keeps its slot until predict() returns; Cog then reports the prediction
        # (and its webhook arrives): the generation must stay CANCELED without outputs.
        time.sleep(5)
        final = client.get(created.name)
    assert final.state == pb.GENERATION_STATE_CANCELED
    assert not final.outputs
    assert len(cog.predictions()) == 1


def test_a_cog_mp4_over_5_mb_arrives_by_webhook_and_the_generation_succeeds(
    start_cog: Callable[..., CogServer], big_cog_video: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    cog = start_cog(video=big_cog_video)
    env = {
        "GENERATION_DEFAULT_PROVIDER": "cog",
        "COG_MODELS": f"svd-local:VIDEO={cog.url}",
        "GENERATION_WEBHOOK_PORT": str(free_port()),
    }
    service = start_service("generation", env=env)
    with GenerationClient(service.address) as client:
        created = client.create(kind=pb.GENERATION_KIND_VIDEO, prompt="big", options={"width": 320, "height": 192})
        done = client.wait(created.name, timeout=90)
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, (done.error, service.logs())
    (asset,) = done.outputs
    assert asset.size_bytes == big_cog_video.stat().st_size > 5 * 1024 * 1024
    assert asset.sha256 == hashlib.sha256(big_cog_video.read_bytes()).hexdigest()
    assert len(cog.predictions()) == 1


def test_an_oversized_cog_delivery_fails_the_generation_at_once_with_a_clear_message(
    start_cog: Callable[..., CogServer], big_cog_video: Path, start_service: Callable[..., ServiceProcess]
) -> None:
    cog = start_cog(video=big_cog_video)
    env = {
        "GENERATION_DEFAULT_PROVIDER": "cog",
        "COG_MODELS": f"svd-local:VIDEO={cog.url}",
        "GENERATION_WEBHOOK_PORT": str(free_port()),
        "GENERATION_WEBHOOK_MAX_BODY": "1048576",  # 1 MiB: the video alone is over 5 MB
        "GENERATION_DEADLINE": "10m",
    }
    service = start_service("generation", env=env)
    with GenerationClient(service.address) as client:
        created = client.create(kind=pb.GENERATION_KIND_VIDEO, prompt="fat", options={"width": 320, "height": 192})
        done = client.wait(created.name, timeout=60)  # well before the 10 min deadline
    assert done.state == pb.GENERATION_STATE_FAILED
    assert done.error.reason == "OUTPUT_TOO_LARGE"
    assert "GENERATION_WEBHOOK_MAX_BODY" in done.error.message
    generation_id = created.name.split("/")[1]
    assert any("cog webhook refused" in line and generation_id in line for line in service.logs().splitlines()), (
        service.logs()
    )


def test_a_cog_prediction_that_finished_while_the_service_was_down_is_not_run_twice(
    start_cog: Callable[..., CogServer], tmp_path: Path
) -> None:
    cog = start_cog(delay=3.0)
    database = tmp_path / "generation.db"
    env = {
        "GENERATION_DEFAULT_PROVIDER": "cog",
        "COG_MODELS": f"svd-local:VIDEO={cog.url}",
        "GENERATION_WORKER_ID": "worker-cog",
        "GENERATION_WEBHOOK_PORT": str(free_port()),
        "GENERATION_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
    }
    first = ServiceProcess("generation", tmp_path / "svc", env=env).start()
    try:
        with GenerationClient(first.address) as client:
            created = client.create(kind=pb.GENERATION_KIND_VIDEO, prompt="while down",
                                    options={"width": 320, "height": 192})  # fmt: skip
            # Killed once the service has recorded that Cog accepted the prediction (the run is Cog's from then
            # on); a kill between Cog's accept and that record is the one window in which a restart PUTs again.
            deadline = time.monotonic() + 20
            while not (cog.predictions() and _accepted_by_cog(database)):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert first.process is not None
        first.process.kill()  # SIGKILL while the prediction runs
        first.process.wait()
    finally:
        first.terminate()
    # The prediction finishes while the service is down (Cog is idle again, its webhook unanswered).
    deadline = time.monotonic() + 30
    while httpx.get(f"{cog.url}/health-check", timeout=5).json()["status"] != "READY":
        assert time.monotonic() < deadline, "the Cog prediction did not finish"
        time.sleep(0.1)
    second = ServiceProcess("generation", tmp_path / "svc", env=env).start()
    try:
        with GenerationClient(second.address) as client:
            done = client.wait(created.name, timeout=90)
    finally:
        second.terminate()
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, (done.error, second.logs())
    assert len(cog.predictions()) == 1  # found where it was delivered, not PUT (and run) again
    (asset,) = done.outputs
    assert (asset.content_type, asset.frame_count) == ("video/mp4", 16)


def _accepted_by_cog(database: Path) -> bool:
    """Whether the generation's prediction record says Cog accepted it (the worker's checkpoint after the PUT)."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT predictions FROM generations").fetchall()
    return any(
        record["status"] not in ("creating", "submitting")
        for (predictions,) in rows
        for record in json.loads(predictions or "[]")
    )
