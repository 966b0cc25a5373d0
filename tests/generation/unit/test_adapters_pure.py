"""Pure parts of the adapters: webhook signatures (reference A7 test vector), content sniffing, input shaping."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from contentpipe.common.settings import ConfigError
from contentpipe.common.workqueue import QueueSettings
from contentpipe.generation.adapters.media import sniff_content_type
from contentpipe.generation.adapters.replicate import (
    ReplicateProvider,
    ReplicateSettings,
    nearest_aspect_ratio,
    svd_timing,
)
from contentpipe.generation.config import load_config, parse_cog_models
from contentpipe.generation.domain.catalogue import replicate_models
from contentpipe.generation.domain.model import GenerationKind, GenerationOptions
from contentpipe.generation.domain.model_input import InputSchema, coerce_model_input
from contentpipe.generation.entrypoints.webhooks import WebhookReceiver, WebhookRejected, verify_webhook
from contentpipe.generation.service_layer.ports import StepInput
from contentpipe.generation.service_layer.worker import TokenBucket

from tests.fakes.replicate_schemas import openapi_schema

pytestmark = pytest.mark.unit

VECTOR = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"test": 2432232314}'


def test_webhook_signature_test_vector_verifies() -> None:
    verify_webhook(SECRET, VECTOR, BODY, now=1614265330)
    several = {**VECTOR, "webhook-signature": "v1,bm90LWl0 " + VECTOR["webhook-signature"]}
    verify_webhook(SECRET, several, BODY, now=1614265330 + 60)


@pytest.mark.parametrize(
    ("headers", "body", "now"),
    [
        (VECTOR, b'{"test": 2432232315}', 1614265330),  # body changed
        ({**VECTOR, "webhook-id": "msg_other"}, BODY, 1614265330),  # id changed
        (VECTOR, BODY, 1614265330 + 3600),  # too old: replay
        ({k: v for k, v in VECTOR.items() if k != "webhook-signature"}, BODY, 1614265330),
        ({**VECTOR, "webhook-signature": "v2," + VECTOR["webhook-signature"][3:]}, BODY, 1614265330),
    ],
)
def test_webhook_with_anything_changed_is_rejected(headers: dict[str, str], body: bytes, now: int) -> None:
    with pytest.raises(WebhookRejected):
        verify_webhook(SECRET, headers, body, now=now)


def test_webhook_receiver_is_idempotent_per_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    delivered: list[dict[str, object]] = []
    receiver = WebhookReceiver(SECRET, delivered.append)
    monkeypatch.setattr(time, "time", lambda: 1614265330.0)
    assert receiver.handle(VECTOR, BODY) == 200
    assert receiver.handle(VECTOR, BODY) == 200
    assert delivered == [{"test": 2432232314}]
    assert receiver.handle({**VECTOR, "webhook-signature": "v1,AAAA"}, BODY) == 401


def test_content_is_sniffed_from_bytes_not_names() -> None:
    assert sniff_content_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert sniff_content_type(b"\x00\x00\x00\x20ftypisom") == "video/mp4"
    assert sniff_content_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_content_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_content_type(b"<html>") is None


def _step(style_model: str, role: str = "video", **options: object) -> StepInput:
    spec = next(s for s in replicate_models() if s.name == style_model)
    return StepInput(
        generation_id="g", owner="u", role=role, kind=spec.kind, prompt="a fox",
        options=GenerationOptions(**options), spec=spec,  # type: ignore[arg-type]
        deadline=datetime.now(UTC) + timedelta(minutes=5), input_image="https://img/x.png",
    )  # fmt: skip


def test_replicate_inputs_follow_each_models_schema() -> None:
    provider = ReplicateProvider(ReplicateSettings(), clients=[])
    svd = provider.model_input(_step("stability-ai/stable-video-diffusion", fps=10, duration_seconds=2, seed=4))
    assert svd == {
        "input_image": "https://img/x.png", "video_length": "14_frames_with_svd",
        "sizing_strategy": "maintain_aspect_ratio", "frames_per_second": 7, "motion_bucket_id": 127,
        "cond_aug": 0.02, "decoding_t": 7, "seed": 4,
    }  # fmt: skip
    flux = provider.model_input(_step("black-forest-labs/flux-schnell", role="image", width=1024, height=576))
    assert flux["aspect_ratio"] == "16:9" and "width" not in flux
    assert (flux["output_format"], flux["output_quality"]) == ("jpg", 90)  # JPEG: what every platform takes
    llama = provider.model_input(_step("meta/meta-llama-3-8b-instruct", role="text", max_tokens=99))
    assert llama == {"prompt": "a fox", "max_tokens": 99}
    assert nearest_aspect_ratio(576, 1024) == "9:16"


@pytest.mark.parametrize(
    ("duration", "frames", "fps"),
    [(2.0, 14, 7), (4.0, 25, 6), (5.0, 25, 5), (10.0, 25, 5), (1.0, 25, 25), (0.5, 14, 28), (0.1, 14, 30),
     (3.0, 25, 8), (0.0, 25, 6)],
)  # fmt: skip
def test_svd_frames_and_fps_come_as_close_to_the_duration_as_the_model_allows(
    duration: float, frames: int, fps: int
) -> None:
    assert svd_timing(duration) == (frames, fps)


def test_model_input_numbers_are_typed_by_the_schema_or_made_integers_when_integral() -> None:
    schema = InputSchema.from_openapi(openapi_schema("stability-ai/stable-video-diffusion"))
    assert schema is not None
    assert schema.types["decoding_t"] == "integer" and schema.types["cond_aug"] == "number"
    assert schema.types["video_length"] == "string"  # an enum behind allOf/$ref
    struct_values = {"decoding_t": 14.0, "cond_aug": 1.0, "seed": 3.0, "name": "x", "flag": True, "list": [1.0, 1.5]}
    typed = coerce_model_input(struct_values, schema)
    assert typed == {"decoding_t": 14, "cond_aug": 1.0, "seed": 3, "name": "x", "flag": True, "list": [1, 1.5]}
    assert type(typed["decoding_t"]) is int and type(typed["cond_aug"]) is float
    assert type(coerce_model_input({"cond_aug": 1.0})["cond_aug"]) is int  # no schema: integral floats become ints
    assert coerce_model_input({"nested": {"k": 2.0}, "half": 2.5}) == {"nested": {"k": 2}, "half": 2.5}
    assert InputSchema.from_openapi({"error": "OpenAPI schema not available"}) is None


async def test_token_bucket_spaces_acquisitions_at_the_rate() -> None:
    bucket = TokenBucket(rate=20, burst=1)
    started = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(5)))
    assert 0.18 <= time.monotonic() - started < 0.6  # 4 waits of 50 ms after the first token


def test_worker_queue_variables_fill_the_shared_queue_settings() -> None:
    config = load_config(
        {
            "CONTENTPIPE_JWT_SECRET": "x" * 32,
            "GENERATION_WORKER_ID": "pod-3",
            "GENERATION_WORKER_LEASE": "40s",
            "GENERATION_WORKER_POLL_INTERVAL": "0.5s",
            "GENERATION_WORKER_MAX_IN_FLIGHT": "64",
        }
    )
    assert config.queue == QueueSettings(
        owner="pod-3", lease_seconds=40.0, poll_interval=0.5, concurrency=64, claim_batch=200
    )


def test_config_names_the_bad_variable() -> None:
    base = {"CONTENTPIPE_JWT_SECRET": "x" * 32}
    assert load_config(base).default_provider == "local"
    for env, name in [
        ({"GENERATION_DEFAULT_PROVIDER": "openai"}, "GENERATION_DEFAULT_PROVIDER"),
        ({"GENERATION_STORAGE_BACKEND": "s3"}, "S3_ENDPOINT_URL"),
        ({"COG_MODELS": "video=http://x"}, "COG_MODELS"),
        ({"REPLICATE_WEBHOOK_URL": "https://x/hook"}, "REPLICATE_WEBHOOK_SECRET"),
        ({"GENERATION_DEADLINE": "soon"}, "GENERATION_DEADLINE"),
        ({"GENERATION_DEFAULT_PROVIDER": "replicate"}, "REPLICATE_API_TOKEN"),
    ]:
        with pytest.raises(ConfigError, match=name):
            load_config({**base, **env})
    assert parse_cog_models("a:video=http://h:1, b:TEXT=https://t") == {
        "a": (GenerationKind.VIDEO, "http://h:1"),
        "b": (GenerationKind.TEXT, "https://t"),
    }
