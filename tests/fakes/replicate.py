"""A loopback fake of Replicate's HTTP API that follows reference A1-A10.

- `POST /v1/predictions` (with `version`) and `POST /v1/models/{owner}/{name}/predictions` answer 201 with a
  prediction in `starting`; `Prefer: wait=N` holds the answer until the prediction is terminal or N seconds pass.
- `GET /v1/predictions/{id}` moves `starting -> processing -> succeeded` over `polls_to_finish` polls (or after
  `latency` seconds when that is set), with `output`, `completed_at` and `metrics.predict_time` filled in.
- `GET /v1/predictions` lists newest first, paginated by `next` URL, filtered by `created_after`/`created_before`;
  its results have no `webhook` field (the documented list schema has none). `POST /v1/predictions/{id}/cancel`
  cancels.
- Inputs are validated strictly against the model's schema (`tests/fakes/replicate_schemas.py`; an `integer` field
  refuses `14.0`) with Replicate's 422 shape; `GET /v1/models/{o}/{n}[/versions/{v}]` publish that schema.
- Knobs for failure: `fail_with` (status failed + error), `throttle_creates` (429 + Retry-After), `flaky_gets`
  (every n-th GET answers 500), `hang_creates` (the prediction is created, the answer hangs), `require_token`.
- Media: files are `video_bytes`/`image_bytes`/`jpeg_bytes` as given; with `render_svd` an SVD prediction's MP4 is
  rendered like the real model's: 14 or 25 frames (`video_length`) of 1024x576 H.264 at `frames_per_second`, no audio.
- Webhooks: when a create carries `webhook`, `start` and `completed` are POSTed, signed with the Standard-Webhooks
  scheme of A7; `completed` is retried on failure.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import secrets
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import imageio_ffmpeg  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.replicate_schemas import openapi_schema, validate_input

TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def sign_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def render(*, width: int, height: int, frames: int, fps: int, suffix: str) -> bytes:
    """`frames` frames of ffmpeg's moving test pattern at `fps` (1 frame: a still), encoded by file suffix."""
    codec = ["-c:v", "libx264", "-pix_fmt", "yuv420p"] if suffix == ".mp4" else []
    with tempfile.TemporaryDirectory() as folder:
        out = f"{folder}/out{suffix}"
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
             "-i", f"testsrc2=s={width}x{height}:r={fps}", "-frames:v", str(frames), *codec, "-y", out],
            check=True, timeout=60,
        )  # fmt: skip
        with open(out, "rb") as handle:
            return handle.read()


@functools.cache
def svd_mp4(frames: int, fps: int) -> bytes:
    """What stable-video-diffusion returns (reference A9.1): 1024x576, 14 or 25 frames at `frames_per_second`."""
    return render(width=1024, height=576, frames=frames, fps=fps, suffix=".mp4")


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class FakePrediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    created: float
    webhook: str | None = None
    status: str = "starting"
    polls: int = 0
    output: Any = None
    error: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    created_at: str = field(default_factory=_now)
    deadline: str | None = None
    cancel_after: float | None = None

    def to_json(self, base_url: str, *, listed: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "logs": "" if self.status == "starting" else "50%|█████     | 5/10",
            "metrics": {"predict_time": 1.0} if self.status == "succeeded" else {},
            "data_removed": False,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "source": "api",
            "urls": {
                "get": f"{base_url}/v1/predictions/{self.id}",
                "cancel": f"{base_url}/v1/predictions/{self.id}/cancel",
            },
        }
        if self.webhook and not listed:
            body["webhook"] = self.webhook
        if self.deadline:
            body["deadline"] = self.deadline
        return body


class FakeReplicate:
    """State and knobs of the fake; `app` is the Starlette app to run with LoopbackHTTPServer."""

    def __init__(
        self,
        *,
        video_bytes: bytes = b"",
        image_bytes: bytes = b"",
        jpeg_bytes: bytes = b"",
        polls_to_finish: int = 3,
        latency: float | None = None,
        token: str | None = "r8_test_token",  # noqa: S107 - the fake's test token
        render_svd: bool = False,
    ) -> None:
        self.video_bytes = video_bytes
        self.render_svd = render_svd
        self.image_bytes = image_bytes
        self.jpeg_bytes = jpeg_bytes
        self.polls_to_finish = polls_to_finish
        self.latency = latency
        self.token = token
        self.base_url = ""  # set by the test once the server listens
        self.predictions: dict[str, FakePrediction] = {}
        self.order: list[str] = []
        self.lock = threading.Lock()
        # knobs
        self.fail_with: str | None = None
        self.throttle_creates = 0
        self.retry_after = "1"
        self.flaky_gets = 0  # every n-th GET of a prediction answers 500
        self.hang_creates = 0  # the next n creates create the prediction but never answer in time
        self.hang_seconds = 30.0
        self.webhook_secret = WEBHOOK_SECRET
        # observations
        self.requests: list[tuple[float, str, str]] = []
        self.create_calls = 0
        self.get_calls = 0
        self.cancel_calls = 0
        self.schema_calls = 0
        self.list_queries: list[dict[str, str]] = []
        self.refused_inputs: list[list[dict[str, str]]] = []
        self.webhook_deliveries: list[tuple[str, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/v1/predictions", self.create_by_version, methods=["POST"]),
                Route("/v1/predictions", self.list_predictions, methods=["GET"]),
                Route("/v1/models/{owner}/{name}/predictions", self.create_by_model, methods=["POST"]),
                Route("/v1/models/{owner}/{name}", self.get_model, methods=["GET"]),
                Route("/v1/models/{owner}/{name}/versions/{version}", self.get_version, methods=["GET"]),
                Route("/v1/predictions/{id}", self.get_prediction, methods=["GET"]),
                Route("/v1/predictions/{id}/cancel", self.cancel_prediction, methods=["POST"]),
                Route("/files/{id}/{filename}", self.file, methods=["GET"]),
            ]
        )

    # ------------------------------------------------------------------ helpers

    @property
    def created(self) -> int:
        return len(self.predictions)

    def _auth(self, request: Request) -> Response | None:
        self.requests.append((time.monotonic(), request.method, request.url.path))
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse(
                {"title": "Unauthenticated", "detail": "You did not pass a valid authentication token", "status": 401},
                status_code=401,
            )
        return None

    def _output_for(self, prediction: FakePrediction) -> Any:
        url = f"{self.base_url}/files/{prediction.id}"
        if "stable-video-diffusion" in prediction.model or "zeroscope" in prediction.model:
            return f"{url}/out.mp4"
        if "llama" in prediction.model:
            return ["A ", "caption ", "about ", str(prediction.input.get("prompt", ""))]
        extension = "jpg" if prediction.input.get("output_format") == "jpg" else "png"
        return [f"{url}/out-0.{extension}"]

    def _advance(self, prediction: FakePrediction, *, by_poll: bool) -> None:
        if prediction.status in TERMINAL:
            return
        if prediction.cancel_after is not None and time.monotonic() > prediction.created + prediction.cancel_after:
            prediction.status = "aborted" if prediction.status == "starting" else "canceled"
            prediction.completed_at = _now()
            return
        if self.latency is not None:
            done = time.monotonic() - prediction.created >= self.latency
            step = 2 if done else 1
        else:
            if by_poll:
                prediction.polls += 1
            step = 2 if prediction.polls >= self.polls_to_finish else min(1, prediction.polls)
        if step >= 1 and prediction.status == "starting":
            prediction.status = "processing"
            prediction.started_at = _now()
        if step >= 2:
            prediction.completed_at = _now()
            if self.fail_with:
                prediction.status = "failed"
                prediction.error = self.fail_with
            else:
                prediction.status = "succeeded"
                prediction.output = self._output_for(prediction)
            self._send_webhook(prediction, "completed")

    # ------------------------------------------------------------------ routes

    async def create_by_version(self, request: Request) -> Response:
        body = await request.json()
        version = str(body.get("version", ""))
        model, _, hash_ = version.partition(":")
        return await self._create(request, body, model if hash_ else "unknown", hash_ or version)

    async def create_by_model(self, request: Request) -> Response:
        body = await request.json()
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        return await self._create(request, body, model, "hidden")

    async def _create(self, request: Request, body: dict[str, Any], model: str, version: str) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        self.create_calls += 1
        if self.throttle_creates > 0:
            self.throttle_creates -= 1
            return JSONResponse(
                {"detail": "Request was throttled. Expected available in 1 second."},
                status_code=429,
                headers={"retry-after": self.retry_after},
            )
        if not isinstance(body.get("input"), dict):
            return JSONResponse(
                {"title": "Input validation failed", "detail": "- input: required", "status": 422,
                 "invalid_fields": [{"type": "required", "field": "input", "description": "input is required"}]},
                status_code=422,
            )  # fmt: skip
        invalid = validate_input(model, body["input"])
        if invalid:
            self.refused_inputs.append(invalid)
            detail = "".join(f"- {f['field']}: {f['description']}\n" for f in invalid)
            return JSONResponse(
                {"title": "Input validation failed", "detail": detail, "status": 422, "invalid_fields": invalid},
                status_code=422,
            )
        prediction = FakePrediction(
            id=secrets.token_hex(13)[:26],
            model=model,
            version=version,
            input=body["input"],
            created=time.monotonic(),
            webhook=body.get("webhook"),
        )
        cancel_after = request.headers.get("cancel-after", "")
        if cancel_after.endswith("s") and cancel_after[:-1].isdigit():
            prediction.cancel_after = float(cancel_after[:-1])
            prediction.deadline = _now()
        with self.lock:
            self.predictions[prediction.id] = prediction
            self.order.append(prediction.id)
        self._send_webhook(prediction, "start")
        if self.hang_creates > 0:
            self.hang_creates -= 1
            await asyncio.sleep(self.hang_seconds)
        prefer = request.headers.get("prefer", "")
        if prefer.startswith("wait") and self.latency is not None:  # poll mode: the model is "slow"
            wait = float(prefer.partition("=")[2] or 60)
            until = time.monotonic() + wait
            while time.monotonic() < until and prediction.status not in TERMINAL:
                self._advance(prediction, by_poll=False)
                if prediction.status in TERMINAL:
                    break
                ready_at = prediction.created + (self.latency or 0.0)
                await asyncio.sleep(max(0.001, min(until, ready_at) - time.monotonic()))
        headers = {"location": f"{self.base_url}/v1/predictions/{prediction.id}"}
        return JSONResponse(prediction.to_json(self.base_url), status_code=201, headers=headers)

    async def get_prediction(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        self.get_calls += 1
        if self.flaky_gets and self.get_calls % self.flaky_gets == 0:
            return JSONResponse({"detail": "Internal server error"}, status_code=500)
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return JSONResponse({"detail": "Not found.", "status": 404}, status_code=404)
        self._advance(prediction, by_poll=True)
        return JSONResponse(prediction.to_json(self.base_url))

    async def list_predictions(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        self.list_queries.append(dict(request.query_params))
        after = _parse(request.query_params.get("created_after"))
        before = _parse(request.query_params.get("created_before"))
        newest_first = [
            i
            for i in reversed(self.order)
            if (after is None or _parse(self.predictions[i].created_at) >= after)  # type: ignore[operator]
            and (before is None or _parse(self.predictions[i].created_at) <= before)  # type: ignore[operator]
        ]
        start = int(request.query_params.get("cursor", "0"))
        page = newest_first[start : start + 100]
        filters = {k: v for k, v in request.query_params.items() if k != "cursor"}

        def link(cursor: int) -> str:
            return f"{self.base_url}/v1/predictions?{urlencode({**filters, 'cursor': cursor})}"

        following = link(start + 100) if start + 100 < len(newest_first) else None
        previous = link(max(0, start - 100)) if start else None
        results = [self.predictions[i].to_json(self.base_url, listed=True) for i in page]
        return JSONResponse({"previous": previous, "next": following, "results": results})

    async def get_model(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        self.schema_calls += 1
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        schema = openapi_schema(model)
        if schema is None:
            return JSONResponse({"detail": "Not found.", "status": 404}, status_code=404)
        latest = {"id": "0" * 64, "created_at": _now(), "cog_version": "0.9.0", "openapi_schema": schema}
        owner, name = model.split("/")
        return JSONResponse({"url": f"https://replicate.com/{model}", "owner": owner, "name": name,
                             "visibility": "public", "latest_version": latest})  # fmt: skip

    async def get_version(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        self.schema_calls += 1
        schema = openapi_schema(f"{request.path_params['owner']}/{request.path_params['name']}")
        if schema is None:
            return JSONResponse({"detail": "Not found.", "status": 404}, status_code=404)
        return JSONResponse({"id": request.path_params["version"], "created_at": _now(), "cog_version": "0.9.0",
                             "openapi_schema": schema})  # fmt: skip

    async def cancel_prediction(self, request: Request) -> Response:
        if (denied := self._auth(request)) is not None:
            return denied
        self.cancel_calls += 1
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return JSONResponse({"detail": "Not found.", "status": 404}, status_code=404)
        if prediction.status not in TERMINAL:
            prediction.status = "canceled"
            prediction.completed_at = _now()
            self._send_webhook(prediction, "completed")
        return JSONResponse(prediction.to_json(self.base_url))

    async def file(self, request: Request) -> Response:
        filename = request.path_params["filename"]
        prediction = self.predictions.get(request.path_params["id"])
        if filename.endswith(".mp4") and self.render_svd and prediction and "stable-video" in prediction.model:
            frames = 25 if prediction.input.get("video_length") == "25_frames_with_svd_xt" else 14
            fps = int(prediction.input.get("frames_per_second", 6))
            return Response(await asyncio.to_thread(svd_mp4, frames, fps), media_type="video/mp4")
        if filename.endswith(".mp4"):
            return Response(self.video_bytes, media_type="video/mp4")
        if filename.endswith(".jpg"):
            return Response(self.jpeg_bytes, media_type="image/jpeg")
        return Response(self.image_bytes, media_type="image/png")

    # ------------------------------------------------------------------ webhooks

    def _send_webhook(self, prediction: FakePrediction, event: str) -> None:
        if not prediction.webhook:
            return
        body = json.dumps(prediction.to_json(self.base_url)).encode()
        task = asyncio.get_running_loop().create_task(self._deliver(prediction.webhook, body, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, body: bytes, event: str) -> None:
        message_id = f"msg_{secrets.token_hex(8)}"
        attempts = 4 if event == "completed" else 1  # only the final webhook is retried
        async with httpx.AsyncClient(timeout=5) as client:
            for attempt in range(attempts):
                timestamp = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": message_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": sign_webhook(self.webhook_secret, message_id, timestamp, body),
                }
                try:
                    response = await client.post(url, content=body, headers=headers)
                    self.webhook_deliveries.append((event, response.status_code))
                    if response.status_code < 300:
                        return
                except httpx.HTTPError:
                    self.webhook_deliveries.append((event, 0))
                await asyncio.sleep(0.2 * 2**attempt)
