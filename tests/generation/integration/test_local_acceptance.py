"""Acceptance through a real gRPC server: a local VIDEO 320x192 at 8 fps for 2 s is an MP4 of 16 frames."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import imageio_ffmpeg  # type: ignore[import-untyped]
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as pb
from contentpipe.common.ids import new_id

from tests.generation.support import GenerationClient, rpc_error
from tests.support import ServiceProcess, mint_token
from tests.support.tokens import TEST_JWT_SECRET

pytestmark = pytest.mark.integration


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)


def decode_mp4(path: Path) -> tuple[tuple[int, int], int, float]:
    """Decode every frame with ffmpeg: (frame size, frames decoded, fps)."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = sum(1 for _ in reader)
    return tuple(meta["size"]), frames, float(meta["fps"])


def test_local_video_through_grpcurl_is_a_real_mp4_with_the_asked_frames(
    database_url: str, start_service: Callable[..., ServiceProcess]
) -> None:
    service = start_service("generation", database_url=database_url)
    token = mint_token(TEST_JWT_SECRET, "user-1")
    auth = ["-H", f"authorization: Bearer {token}"]
    body = {
        "generation": {
            "kind": "GENERATION_KIND_VIDEO",
            "prompt": "a lighthouse at dusk",
            "provider": "local",
            "options": {"width": 320, "height": 192, "fps": 8, "durationSeconds": 2, "seed": "7"},
        }
    }
    method = "contentpipe.api.generation.v1.GenerationService"
    created = grpcurl("-plaintext", *auth, "-d", json.dumps(body), service.address, f"{method}/CreateGeneration")
    assert created.returncode == 0, created.stderr
    generation = json.loads(created.stdout)["generation"]
    assert generation["state"] == "GENERATION_STATE_QUEUED"
    name = generation["name"]

    deadline = time.monotonic() + 60
    while True:
        got = grpcurl("-plaintext", *auth, "-d", json.dumps({"name": name}), service.address, f"{method}/GetGeneration")
        assert got.returncode == 0, got.stderr
        generation = json.loads(got.stdout)["generation"]
        if generation["state"] in ("GENERATION_STATE_SUCCEEDED", "GENERATION_STATE_FAILED"):
            break
        assert time.monotonic() < deadline, generation
        time.sleep(0.2)
    assert generation["state"] == "GENERATION_STATE_SUCCEEDED", generation
    (asset,) = generation["outputs"]
    assert asset["contentType"] == "video/mp4"
    assert (asset["width"], asset["height"], asset["frameCount"], asset["fps"]) == (320, 192, 16, 8)
    assert asset["metadata"]["provider"] == "local"
    assert asset["uri"].startswith("file://")
    stored = Path(urlsplit(asset["uri"]).path)
    data = stored.read_bytes()
    assert hashlib.sha256(data).hexdigest() == asset["sha256"]
    assert int(asset["sizeBytes"]) == len(data)
    assert stored.is_relative_to(service.workdir / "data" / "generated-content")
    assert decode_mp4(stored) == ((320, 192), 16, 8.0)
    assert generation["predictions"][0]["provider"] == "local"
    assert generation["progress"] == 1


def test_local_outputs_are_deterministic_and_isolated_per_owner(
    start_service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = start_service("generation")
    with GenerationClient(service.address, "alice") as alice, GenerationClient(service.address, "bob") as bob:
        video = {"width": 128, "height": 64, "fps": 4, "duration_seconds": 1, "seed": 3}
        first = alice.create(kind=pb.GENERATION_KIND_VIDEO, prompt="waves", options=video)
        second = alice.create(kind=pb.GENERATION_KIND_VIDEO, prompt="waves", options=video)
        image = alice.create(kind=pb.GENERATION_KIND_IMAGE, prompt="a cat", options={"width": 64, "height": 96})
        text = alice.create(kind=pb.GENERATION_KIND_TEXT, prompt="sunrise over the bay")
        done = [alice.wait(g.name) for g in (first, second, image, text)]
        assert [g.state for g in done] == [pb.GENERATION_STATE_SUCCEEDED] * 4, done
        assert done[0].outputs[0].sha256 == done[1].outputs[0].sha256  # same prompt + seed, same bytes
        assert done[0].outputs[0].uri != done[1].outputs[0].uri
        jpeg = done[2].outputs[0]
        assert (jpeg.content_type, jpeg.width, jpeg.height) == ("image/jpeg", 64, 96)
        assert Path(urlsplit(jpeg.uri).path).read_bytes().startswith(b"\xff\xd8\xff")
        assert "sunrise over the bay" in done[3].text and not done[3].outputs

        with pytest.raises(grpc.RpcError) as caught:
            bob.get(first.name)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as caught:
            bob.cancel(first.name)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(bob.list().generations) == 0
        assert len(alice.list().generations) == 4

        with pytest.raises(grpc.RpcError) as caught:
            alice.cancel(first.name)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_invalid_options_name_the_field(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_service("generation")
    with GenerationClient(service.address) as client:
        with pytest.raises(grpc.RpcError) as caught:
            client.create(
                kind=pb.GENERATION_KIND_VIDEO,
                prompt="x",
                options={"width": 330, "height": 192, "fps": 90, "duration_seconds": 2},
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = {v.field for v in rpc_error(caught.value).violations}
        assert fields == {"generation.options.width", "generation.options.fps"}

        with pytest.raises(grpc.RpcError) as caught:
            client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="x", model="no-such-model")
        assert [v.field for v in rpc_error(caught.value).violations] == ["generation.model"]

        with pytest.raises(grpc.RpcError) as caught:
            client.create(
                kind=pb.GENERATION_KIND_VIDEO,
                prompt="x",
                options={"input_image_uri": "http://127.0.0.1/secret.png"},
            )
        assert [v.field for v in rpc_error(caught.value).violations] == ["generation.options.input_image_uri"]

        with pytest.raises(grpc.RpcError) as caught:
            client.create(kind=pb.GENERATION_KIND_UNSPECIFIED, prompt="")
        assert {v.field for v in rpc_error(caught.value).violations} == {"generation.kind", "generation.prompt"}


def test_request_id_returns_the_same_generation(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_service("generation")
    with GenerationClient(service.address, "alice") as alice, GenerationClient(service.address, "bob") as bob:
        one = alice.create(request_id="req-1", kind=pb.GENERATION_KIND_TEXT, prompt="hello")
        two = alice.create(request_id="req-1", kind=pb.GENERATION_KIND_TEXT, prompt="hello")
        other = bob.create(request_id="req-1", kind=pb.GENERATION_KIND_TEXT, prompt="hello")
        assert one.name == two.name != other.name
        assert two.request_id == "req-1"
        alice.wait(one.name)
        assert len(alice.list().generations) == 1
        checked = alice.create(validate_only=True, kind=pb.GENERATION_KIND_TEXT, prompt="hello")
        assert checked.state == pb.GENERATION_STATE_QUEUED and checked.name == ""  # nothing to look up
        assert len(alice.list().generations) == 1


def test_a_chosen_generation_id_names_the_generation_and_a_taken_one_is_already_exists(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service("generation")
    with GenerationClient(service.address, "alice") as alice, GenerationClient(service.address, "bob") as bob:
        chosen = new_id()
        created = alice.create(request_id="step-1", generation_id=chosen, kind=pb.GENERATION_KIND_TEXT, prompt="tide")
        retried = alice.create(request_id="step-1", generation_id=chosen, kind=pb.GENERATION_KIND_TEXT, prompt="tide")
        assert created.name == retried.name == f"generations/{chosen}"
        assert alice.get(created.name).name == created.name

        refusals = []
        for client, request_id in ((alice, "step-2"), (alice, ""), (bob, "step-1")):
            with pytest.raises(grpc.RpcError) as caught:
                client.create(request_id=request_id, generation_id=chosen, kind=pb.GENERATION_KIND_TEXT, prompt="x")
            assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
            refusals.append((rpc_error(caught.value).reason, caught.value.details() or ""))
        assert refusals == [("GENERATION_ID_TAKEN", refusals[0][1])] * 3  # bob learns nothing alice does not
        assert "alice" not in refusals[0][1] and "tide" not in refusals[0][1]

        with pytest.raises(grpc.RpcError) as caught:
            alice.create(generation_id=chosen.upper(), kind=pb.GENERATION_KIND_TEXT, prompt="x")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in rpc_error(caught.value).violations] == ["generation_id"]

        unused = new_id()
        checked = alice.create(validate_only=True, generation_id=unused, kind=pb.GENERATION_KIND_TEXT, prompt="x")
        assert checked.name == ""
        with pytest.raises(grpc.RpcError) as caught:
            alice.get(f"generations/{unused}")
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert [g.name for g in alice.list().generations] == [created.name]
        assert len(bob.list().generations) == 0


def test_list_pages_and_filters(start_service: Callable[..., ServiceProcess]) -> None:
    service = start_service("generation", env={"GENERATION_WORKER_ENABLED": "0"})
    with GenerationClient(service.address) as client:
        names = [client.create(kind=pb.GENERATION_KIND_TEXT, prompt=f"p{i}").name for i in range(5)]
        client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="img")
        seen: list[str] = []
        token = ""
        while True:
            page = client.list(page_size=2, kind=pb.GENERATION_KIND_TEXT, page_token=token)
            seen.extend(g.name for g in page.generations)
            token = page.next_page_token
            if not token:
                break
        assert seen == list(reversed(names))
        assert len(client.list(state=pb.GENERATION_STATE_QUEUED).generations) == 6
        assert len(client.list(state=pb.GENERATION_STATE_SUCCEEDED).generations) == 0
        cancelled = client.cancel(names[0])
        assert cancelled.state == pb.GENERATION_STATE_CANCELED
        assert client.get(names[0]).state == pb.GENERATION_STATE_CANCELED
        with pytest.raises(grpc.RpcError) as caught:
            client.list(page_size=2, kind=pb.GENERATION_KIND_IMAGE, page_token=token or "bogus.token")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_local_defaults_are_media_every_platform_takes_without_conversion(
    start_service: Callable[..., ServiceProcess],
) -> None:
    service = start_service("generation")
    with GenerationClient(service.address) as client:
        video = client.create(kind=pb.GENERATION_KIND_VIDEO, prompt="a calm sea")
        image = client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="a calm sea")
        done_video, done_image = client.wait(video.name), client.wait(image.name)
    assert done_video.state == done_image.state == pb.GENERATION_STATE_SUCCEEDED, (done_video.error, done_image.error)

    (mp4,) = done_video.outputs
    assert (mp4.content_type, mp4.width, mp4.height, mp4.fps, mp4.frame_count) == ("video/mp4", 720, 1280, 30, 150)
    assert mp4.duration_seconds == pytest.approx(5.0)
    assert mp4.size_bytes >= 75 * 1024  # LinkedIn's floor
    data = Path(urlsplit(mp4.uri).path).read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: the index comes first
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", urlsplit(mp4.uri).path],
        capture_output=True, text=True, check=False,
    ).stderr  # fmt: skip
    assert "Video: h264 (High)" in probe and "yuv420p" in probe, probe
    assert "Audio: aac (LC)" in probe, probe  # a silent track: Instagram wants AAC audio
    assert decode_mp4(Path(urlsplit(mp4.uri).path)) == ((720, 1280), 150, 30.0)

    (jpeg,) = done_image.outputs
    assert (jpeg.content_type, jpeg.width, jpeg.height) == ("image/jpeg", 1080, 1350)  # 4:5, Instagram's tallest
    assert jpeg.size_bytes < 8 * 1024 * 1024
