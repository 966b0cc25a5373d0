"""The replicate provider in a real service process against the loopback Replicate fake."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as pb

from tests.fakes.replicate import WEBHOOK_SECRET, FakeReplicate
from tests.generation.integration.conftest import replicate_env
from tests.generation.support import GenerationClient
from tests.support import ServiceProcess, free_port

pytestmark = pytest.mark.integration

Fake = tuple[FakeReplicate, str]


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_text_to_video_on_svd_is_two_predictions_and_the_mp4_is_stored(
    replicate_fake: Fake, database_url: str, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    service = start_service("generation", database_url=database_url, env=replicate_env(url))
    with GenerationClient(service.address) as client:
        created = client.create(  # the acceptance request: 320x192, 8 fps, 2 s
            kind=pb.GENERATION_KIND_VIDEO,
            prompt="a fox in the snow",
            options={"width": 320, "height": 192, "fps": 8, "duration_seconds": 2},
        )
        done = client.wait(created.name)
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done.error
    assert [(p.role, p.status) for p in done.predictions] == [("first_frame", "succeeded"), ("video", "succeeded")]
    assert done.predictions[0].model.startswith("stability-ai/sdxl:")
    assert done.predictions[1].model.startswith("stability-ai/stable-video-diffusion:3f0457e4")
    assert fake.created == 2
    first, video = (fake.predictions[p.id] for p in done.predictions)
    assert first.input["prompt"] == "a fox in the snow"
    assert video.input["input_image"] == first.output[0]
    # 2 s asked: 14 frames at 7 fps is exactly 2 s (SVD makes 14 or 25 frames at 5-30 fps)
    assert (video.input["video_length"], video.input["frames_per_second"]) == ("14_frames_with_svd", 7)
    assert (first.input["width"], first.input["height"]) == (320, 192)
    (asset,) = done.outputs
    assert (asset.content_type, asset.width, asset.height, asset.frame_count) == ("video/mp4", 1024, 576, 14)
    stored = Path(urlsplit(asset.uri).path).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == asset.sha256 == hashlib.sha256(fake.video_bytes).hexdigest()
    assert asset.metadata["provider"] == "replicate"


def test_retry_after_on_create_delays_the_next_call_and_the_generation_succeeds(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.throttle_creates = 1
    fake.retry_after = "2"
    service = start_service("generation", env=replicate_env(url))
    with GenerationClient(service.address) as client:
        done = client.wait(client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="a red kite").name)
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done.error
    creates = [t for t, method, path in fake.requests if method == "POST" and path.endswith("/predictions")]
    assert len(creates) == 2
    assert 1.9 <= creates[1] - creates[0] < 6.0
    assert fake.created == 1
    assert done.outputs[0].content_type == "image/jpeg"  # flux asked for JPEG (output_format jpg)


def test_flaky_polls_are_retried_and_unknown_statuses_tolerated(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.flaky_gets = 2  # every second GET answers 500
    fake.polls_to_finish = 4
    service = start_service("generation", env=replicate_env(url))
    with GenerationClient(service.address) as client:
        done = client.wait(client.create(kind=pb.GENERATION_KIND_TEXT, prompt="tides").name)
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done.error
    assert done.text == "A caption about tides"
    assert fake.get_calls >= 6


def test_failed_prediction_fails_the_generation_with_the_providers_reason(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.fail_with = "CUDA out of memory"
    service = start_service("generation", env=replicate_env(url))
    with GenerationClient(service.address) as client:
        done = client.wait(client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="a boat").name)
    assert done.state == pb.GENERATION_STATE_FAILED
    assert done.error.reason == "PROVIDER_FAILED"
    assert "CUDA out of memory" in done.error.message
    assert done.predictions[0].status == "failed"


def test_create_that_hangs_is_found_by_listing_not_created_again(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.hang_creates = 1
    fake.hang_seconds = 30
    fake.polls_to_finish = 2
    service = start_service("generation", env=replicate_env(url))
    with GenerationClient(service.address) as client:
        done = client.wait(client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="a hanging lamp").name, timeout=40)
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done.error
    assert fake.create_calls == 1
    assert fake.created == 1
    assert done.predictions[0].id in fake.predictions


def test_integral_model_input_reaches_replicate_as_integers_typed_by_the_versions_schema(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.polls_to_finish = 1
    service = start_service("generation", env=replicate_env(url))
    with GenerationClient(service.address) as client:
        done = client.wait(
            client.create(
                kind=pb.GENERATION_KIND_VIDEO,
                prompt="a kite",
                options={"duration_seconds": 4,
                         "model_input": {"decoding_t": 14, "cond_aug": 1, "motion_bucket_id": 90}},
            ).name
        )  # fmt: skip
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done.error
    assert not fake.refused_inputs
    prediction = fake.predictions[done.predictions[1].id]  # first frame (sdxl), then the video (SVD)
    assert prediction.input["decoding_t"] == 14 and type(prediction.input["decoding_t"]) is int
    assert type(prediction.input["motion_bucket_id"]) is int
    assert type(prediction.input["cond_aug"]) is float  # a `number` field keeps its float
    assert (prediction.input["video_length"], prediction.input["frames_per_second"]) == ("25_frames_with_svd_xt", 6)
    assert fake.schema_calls == 2  # one per model version, cached


def test_the_replicate_fake_refuses_a_float_for_an_integer_field_like_replicate(replicate_fake: Fake) -> None:
    fake, url = replicate_fake
    body = {"version": "stability-ai/stable-video-diffusion:" + "3" * 64,
            "input": {"input_image": "https://i/x.png", "decoding_t": 14.0}}  # fmt: skip
    response = httpx.post(f"{url}/v1/predictions", json=body, headers={"authorization": "Bearer r8_test_token"})
    assert response.status_code == 422
    error = response.json()
    assert error["title"] == "Input validation failed"
    assert error["invalid_fields"] == [
        {"type": "invalid_type", "field": "input.decoding_t", "description": "Invalid type. Expected: integer, "
         "given: number"}
    ]  # fmt: skip
    assert fake.created == 0


def test_two_generations_whose_creates_were_lost_never_adopt_the_same_prediction(
    replicate_fake: Fake, database_url: str, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.hang_creates = 2  # both creates happen, neither answer arrives
    fake.hang_seconds = 8
    fake.polls_to_finish = 2
    env = replicate_env(url, GENERATION_REPLICATE_CONCURRENCY="2")
    service = start_service("generation", database_url=database_url, env=env)
    with GenerationClient(service.address) as client:
        names = [
            client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="twin lamps", options={"seed": 5}).name
            for _ in range(2)
        ]
        done = [client.wait(name, timeout=40) for name in names]
    assert [g.state for g in done] == [pb.GENERATION_STATE_SUCCEEDED] * 2, [g.error for g in done]
    adopted = {g.predictions[0].id for g in done}
    assert len(adopted) == 2 and adopted == set(fake.predictions)  # one each, none created a third
    assert fake.create_calls == 2
    assert fake.list_queries  # found by listing around the create time, not by a webhook field
    assert all({"created_after", "created_before"} <= set(query) for query in fake.list_queries)


def test_cancel_cancels_the_prediction_at_replicate(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.polls_to_finish = 10**6
    service = start_service("generation", env=replicate_env(url))
    with GenerationClient(service.address) as client:
        created = client.create(kind=pb.GENERATION_KIND_TEXT, prompt="never finishes")
        _wait_for(lambda: any(p.id for p in client.get(created.name).predictions))
        cancelled = client.cancel(created.name)
        assert cancelled.state == pb.GENERATION_STATE_CANCELED
        time.sleep(0.5)
        assert client.get(created.name).state == pb.GENERATION_STATE_CANCELED
    (prediction,) = fake.predictions.values()
    assert prediction.status == "canceled"
    assert fake.cancel_calls >= 1


def test_deadline_cancels_at_the_provider_and_fails_with_deadline_exceeded(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.polls_to_finish = 10**6
    service = start_service("generation", env=replicate_env(url, GENERATION_DEADLINE="2s"))
    with GenerationClient(service.address) as client:
        done = client.wait(client.create(kind=pb.GENERATION_KIND_TEXT, prompt="too slow").name)
    assert done.state == pb.GENERATION_STATE_FAILED
    assert done.error.reason == "DEADLINE_EXCEEDED"
    (prediction,) = fake.predictions.values()
    assert prediction.status == "canceled"
    assert prediction.cancel_after is not None and prediction.cancel_after <= 7  # Cancel-After sent too


@pytest.mark.parametrize("moment", ["polling", "create_in_flight"])
def test_kill_9_while_a_prediction_is_in_flight_resumes_with_exactly_one_prediction(
    moment: str, replicate_fake: Fake, database_url: str, tmp_path: Path
) -> None:
    fake, url = replicate_fake
    fake.polls_to_finish = 10**6
    if moment == "create_in_flight":
        fake.hang_creates = 1
        fake.hang_seconds = 3
    env = replicate_env(url, GENERATION_WORKER_ID="worker-a", REPLICATE_PREFER_WAIT_SECONDS="20")
    first = ServiceProcess("generation", tmp_path / "svc", database_url=database_url, env=env).start()
    try:
        with GenerationClient(first.address) as client:
            created = client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="a lighthouse")
            if moment == "polling":
                _wait_for(lambda: any(p.id for p in client.get(created.name).predictions))
            else:
                _wait_for(lambda: fake.created == 1)
        assert first.process is not None
        first.process.kill()  # SIGKILL: no graceful shutdown, the lease stays held
        first.process.wait()
    finally:
        first.terminate()
    fake.polls_to_finish = 2
    for prediction in fake.predictions.values():
        prediction.polls = 0
    second = ServiceProcess("generation", tmp_path / "svc", database_url=database_url, env=env).start()
    try:
        with GenerationClient(second.address) as client:
            done = client.wait(created.name, timeout=40)
    finally:
        second.terminate()
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, (done.error, second.logs())
    assert fake.created == 1
    assert fake.create_calls == 1
    assert [p.id for p in done.predictions] == list(fake.predictions)


def test_signed_webhooks_are_verified_and_acknowledged(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.polls_to_finish = 3
    port = free_port()
    env = replicate_env(
        url,
        GENERATION_WEBHOOK_PORT=str(port),
        REPLICATE_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/replicate",
        REPLICATE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    service = start_service("generation", env=env)
    with GenerationClient(service.address) as client:
        done = client.wait(client.create(kind=pb.GENERATION_KIND_TEXT, prompt="hooks").name)
    assert done.state == pb.GENERATION_STATE_SUCCEEDED, done.error
    (prediction,) = fake.predictions.values()
    assert prediction.webhook is not None and "generation=" in prediction.webhook
    _wait_for(lambda: ("completed", 200) in fake.webhook_deliveries)
    assert ("start", 200) in fake.webhook_deliveries
    fake.webhook_secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUA=="  # a wrong key: refused
    fake.predictions.clear()
    with GenerationClient(service.address) as client:
        client.wait(client.create(kind=pb.GENERATION_KIND_TEXT, prompt="forged").name)
    _wait_for(lambda: ("completed", 401) in fake.webhook_deliveries)


def test_outputs_are_size_capped_and_content_checked(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.polls_to_finish = 1
    assert len(fake.jpeg_bytes) > 4096
    service = start_service("generation", env=replicate_env(url, GENERATION_MAX_OUTPUT_BYTES="4096"))
    with GenerationClient(service.address) as client:
        big = client.wait(client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="too big").name)
        assert big.state == pb.GENERATION_STATE_FAILED
        assert big.error.reason == "OUTPUT_TOO_LARGE"
        fake.jpeg_bytes = b"<html><body>not an image</body></html>"
        wrong = client.wait(client.create(kind=pb.GENERATION_KIND_IMAGE, prompt="not media").name)
    assert wrong.state == pb.GENERATION_STATE_FAILED
    assert wrong.error.reason == "OUTPUT_UNREADABLE"
    assert not list((service.workdir / "data" / "generated-content").rglob("*.jp*g"))


def test_an_earlier_generations_image_is_the_input_of_image_to_video(
    replicate_fake: Fake, start_service: Callable[..., ServiceProcess]
) -> None:
    fake, url = replicate_fake
    fake.polls_to_finish = 1
    service = start_service("generation", env=replicate_env(url))
    with GenerationClient(service.address, "alice") as alice, GenerationClient(service.address, "bob") as bob:
        image = alice.wait(
            alice.create(
                kind=pb.GENERATION_KIND_IMAGE, prompt="a still", provider="local", options={"width": 64, "height": 64}
            ).name
        )
        assert image.state == pb.GENERATION_STATE_SUCCEEDED
        video = alice.wait(
            alice.create(
                kind=pb.GENERATION_KIND_VIDEO, prompt="animate it", options={"input_image_uri": image.name}
            ).name
        )
        with pytest.raises(grpc.RpcError) as caught:  # somebody else's generation is not an input
            bob.create(kind=pb.GENERATION_KIND_VIDEO, prompt="steal", options={"input_image_uri": image.name})
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert video.state == pb.GENERATION_STATE_SUCCEEDED, video.error
    assert [p.role for p in video.predictions] == ["video"]  # no first frame needed
    (prediction,) = fake.predictions.values()
    jpeg = Path(urlsplit(image.outputs[0].uri).path).read_bytes()
    assert prediction.input["input_image"] == "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
