"""The `replicate` provider: an async httpx client of Replicate's HTTP API (reference A1-A9).

Never pays twice: the create marker (our `create_key` and time) is persisted before the POST; a create whose
answer was lost (timeout, dropped connection, 5xx) is resolved by listing recent predictions and matching ours
before anything is created again; a restarted worker does the same, or polls the stored prediction id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from contentpipe.common.http import MAX_RETRY_AFTER_SECONDS, parse_retry_after, retrying_request
from contentpipe.generation.adapters.input_schemas import InputSchemaCache
from contentpipe.generation.domain.catalogue import ModelSpec
from contentpipe.generation.domain.model import (
    ErrorReason,
    GenerationFailure,
    GenerationKind,
    PredictionRecord,
)
from contentpipe.generation.domain.model_input import InputSchema, coerce_model_input
from contentpipe.generation.service_layer.ports import Checkpoint, PredictionClaims, StepInput, StepResult

_log = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
CANCEL_AFTER_MARGIN_SECONDS = 5
LOOKUP_CLOCK_SKEW = timedelta(minutes=1)  # our clock against Replicate's, when listing around a create
SVD_MIN_FPS, SVD_MAX_FPS = 5, 30
_PERCENT = re.compile(r"(\d{1,3})%")
_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")


@dataclass(frozen=True, slots=True)
class ReplicateSettings:
    base_url: str = "https://api.replicate.com"
    api_token: str = ""
    prefer_wait_seconds: int = 10  # sync mode: hold the create open this long (1-60; 0 = off)
    poll_initial_seconds: float = 0.5
    poll_max_seconds: float = 5.0
    send_cancel_after: bool = True
    webhook_url: str | None = None
    lookup_attempts: int = 3  # listings to find a create whose answer was lost, before creating again
    lookup_delay_seconds: float = 1.0
    request_timeout_seconds: float = 30.0


class _Ambiguous(Exception):
    """The create may or may not have happened."""


class ReplicateProvider:
    name = "replicate"

    def __init__(
        self,
        settings: ReplicateSettings,
        clients: httpx.AsyncClient | Sequence[httpx.AsyncClient],
        claims: PredictionClaims | None = None,
    ) -> None:
        self._s = settings
        # Several small connection pools instead of one big one: httpcore scans its whole pool for every request,
        # which costs O(connections) per request and dominated CPU with hundreds of predictions in flight.
        self._clients = [clients] if isinstance(clients, httpx.AsyncClient) else list(clients)
        self._next_client = itertools.cycle(range(len(self._clients)))
        self._headers = {"authorization": f"Bearer {settings.api_token}"} if settings.api_token else {}
        self._base = settings.base_url.rstrip("/")
        self._webhook_events: dict[str, asyncio.Event] = {}
        self._webhook_latest: dict[str, dict[str, Any]] = {}
        self._claims = claims
        self._schemas = InputSchemaCache()

    def _client(self) -> httpx.AsyncClient:
        return self._clients[next(self._next_client)]

    # ------------------------------------------------------------------ input shaping (reference A9)

    def model_input(self, step: StepInput, schema: InputSchema | None = None) -> dict[str, Any]:
        o, spec = step.options, step.spec
        seed = {"seed": o.seed} if o.seed is not None else {}
        body: dict[str, Any]
        if spec.style == "svd":
            frames, fps = svd_timing(o.duration_seconds)
            body = {
                "input_image": step.input_image,
                "video_length": "14_frames_with_svd" if frames == 14 else "25_frames_with_svd_xt",
                "sizing_strategy": "maintain_aspect_ratio",
                "frames_per_second": fps,
                "motion_bucket_id": o.motion_strength or 127,
                "cond_aug": 0.02,
                "decoding_t": 7,
                **seed,
            }
        elif spec.style == "zeroscope":
            body = {"prompt": step.prompt, "width": o.width, "height": o.height, "num_frames": o.frame_count(),
                    "fps": o.fps, **seed}  # fmt: skip
        elif spec.style == "flux":
            # JPEG: what every platform takes without a re-encode (Instagram refuses PNG and WebP).
            body = {"prompt": step.prompt, "aspect_ratio": nearest_aspect_ratio(o.width, o.height), "num_outputs": 1,
                    "output_format": "jpg", "output_quality": 90, **seed}  # fmt: skip
        elif spec.style == "sdxl":
            body = {"prompt": step.prompt, "width": _clamp8(o.width, 128, 2048), "height": _clamp8(o.height, 128, 2048),
                    "num_outputs": 1, **seed}  # fmt: skip
            if step.input_image and step.role != "first_frame":
                body["image"] = step.input_image
        elif spec.style == "llama":
            body = {"prompt": step.prompt, "max_tokens": o.max_tokens or 256}
        else:
            body = {"prompt": step.prompt, **seed}
        if step.role != "first_frame":
            body.update(o.model_input)
        return coerce_model_input(body, schema)

    def _create_call(self, step: StepInput, schema: InputSchema | None) -> tuple[str, dict[str, Any]]:
        spec = step.spec
        body: dict[str, Any] = {"input": self.model_input(step, schema)}
        if spec.version:
            return "/v1/predictions", {"version": f"{spec.name}:{spec.version}", **body}
        owner, _, name = spec.name.partition("/")
        return f"/v1/models/{owner}/{name}/predictions", body

    async def input_schema(self, spec: ModelSpec) -> InputSchema | None:
        """The model version's input types from its `openapi_schema`; None while unavailable."""
        return await self._schemas.get(spec.reference, lambda: self._fetch_schema(spec))

    async def _fetch_schema(self, spec: ModelSpec) -> InputSchema | None:
        owner, _, name = spec.name.partition("/")
        path = f"/v1/models/{owner}/{name}" + (f"/versions/{spec.version}" if spec.version else "")
        try:
            response = await retrying_request(
                self._client(), "GET", f"{self._base}{path}", headers=self._headers, max_attempts=2, timeout=10.0
            )
        except httpx.TransportError as exc:
            _log.warning("replicate model schema unavailable", extra={"model": spec.reference, "error": str(exc)})
            return None
        if response.status_code != 200:
            _log.warning("replicate model schema unavailable", extra={"model": spec.reference,
                                                                      "status": response.status_code})  # fmt: skip
            return None
        document = response.json()
        version = document if spec.version else document.get("latest_version") or {}
        return InputSchema.from_openapi(version.get("openapi_schema"))

    def _webhook_for(self, step: StepInput, key: str) -> str | None:
        if not self._s.webhook_url:
            return None
        query = urlencode({"generation": step.generation_id, "role": step.role, "key": key})
        separator = "&" if "?" in self._s.webhook_url else "?"
        return f"{self._s.webhook_url}{separator}{query}"

    # ------------------------------------------------------------------ the provider port

    async def run(self, step: StepInput, record: PredictionRecord, checkpoint: Checkpoint) -> StepResult:
        prediction: dict[str, Any] | None = None
        call: tuple[str, dict[str, Any]] | None = None
        if not record.id:
            call = self._create_call(step, await self.input_schema(step.spec))
            if record.create_started is not None:
                prediction = await self._find(step, record, call[1])  # a create from before a crash may exist
        if prediction is None and call is not None:
            prediction = await self._create(step, record, checkpoint, call)
        if prediction is None:
            prediction = await self._get(record.id)
        await self._observe(record, prediction, checkpoint)
        delay = self._s.poll_initial_seconds
        while record.status not in TERMINAL:
            await self._wait_for_update(record.id, delay)
            delay = min(self._s.poll_max_seconds, delay * 1.5)
            prediction = self._webhook_latest.pop(record.id, None) or await self._get(record.id)
            await self._observe(record, prediction, checkpoint)
        return self._result(step, record, prediction)

    async def cancel(self, record: PredictionRecord, spec: ModelSpec) -> None:
        if not record.id:
            return
        response = await retrying_request(
            self._client(), "POST", f"{self._base}/v1/predictions/{record.id}/cancel",
            retry_methods={"POST"}, max_attempts=3, headers=self._headers, timeout=10.0,
        )  # fmt: skip
        if response.status_code >= 400 and response.status_code != 404:
            _log.warning("replicate cancel refused", extra={"status": response.status_code, "prediction": record.id})

    # ------------------------------------------------------------------ create, find, get

    async def _create(
        self, step: StepInput, record: PredictionRecord, checkpoint: Checkpoint, call: tuple[str, dict[str, Any]]
    ) -> dict[str, Any]:
        path, body = call
        for attempt in range(1 + self._s.lookup_attempts):
            record.create_key = secrets.token_hex(8)
            record.create_started = datetime.now(UTC)
            record.status = "creating"
            webhook = self._webhook_for(step, record.create_key)
            if webhook:
                body["webhook"] = webhook
                body["webhook_events_filter"] = ["start", "completed"]
            await checkpoint(None)  # durable before the POST: a restart looks for this create first
            try:
                created = await self._post_create(path, body, step)
            except _Ambiguous as exc:
                _log.warning(
                    "replicate create answer lost; looking for it", extra={"error": str(exc), "attempt": attempt}
                )
                found = await self._find(step, record, body)
                if found is not None:
                    return found
                continue
            if await self._claim(step, str(created.get("id") or "")):
                return created
            # Another generation with the same input adopted this prediction while looking for its own lost create:
            # that one is then ours (same model, same input), unless it was adopted as well.
            _log.warning("our replicate prediction was adopted by another generation; looking for its twin",
                         extra={"prediction": created.get("id"), "generation_id": step.generation_id})  # fmt: skip
            found = await self._find(step, record, body)
            if found is not None:
                return found
        raise GenerationFailure(
            ErrorReason.PROVIDER_UNAVAILABLE, "Replicate did not confirm the prediction create; try again later",
            retryable=True,
        )  # fmt: skip

    async def _claim(self, step: StepInput, prediction_id: str) -> bool:
        if self._claims is None or not prediction_id:
            return True
        return await self._claims.hold_prediction(self.name, prediction_id, step.generation_id)

    async def _post_create(self, path: str, body: dict[str, Any], step: StepInput) -> dict[str, Any]:
        headers = dict(self._headers)
        wait = self._s.prefer_wait_seconds
        if wait:
            headers["prefer"] = f"wait={wait}"
        timeout = httpx.Timeout(
            connect=5.0, read=wait + 5.0 if wait else self._s.request_timeout_seconds, write=30.0, pool=30.0
        )
        while True:
            remaining = int((step.deadline - datetime.now(UTC)).total_seconds())
            if remaining <= 0:
                raise TimeoutError
            if self._s.send_cancel_after:
                # A backstop for when we cannot cancel ourselves (crash); our own deadline fires first.
                headers["cancel-after"] = f"{remaining + CANCEL_AFTER_MARGIN_SECONDS}s"
            try:
                response = await self._client().post(f"{self._base}{path}", json=body, headers=headers, timeout=timeout)
            except httpx.ConnectError as exc:  # never reached the server: nothing was created
                await asyncio.sleep(1.0)
                _log.warning("replicate unreachable; retrying create", extra={"error": str(exc)})
                continue
            except httpx.TransportError as exc:  # sent, answer lost (timeout, reset): maybe created
                raise _Ambiguous(type(exc).__name__) from exc
            if response.status_code == 429:  # not accepted: safe to send again after the hinted delay
                delay = parse_retry_after(response.headers.get("retry-after")) or 1.0
                await asyncio.sleep(min(delay, MAX_RETRY_AFTER_SECONDS))
                continue
            if response.status_code >= 500:
                raise _Ambiguous(f"HTTP {response.status_code}")
            if response.status_code in (401, 403):
                raise GenerationFailure(
                    ErrorReason.PROVIDER_UNAVAILABLE,
                    "Replicate rejected the API token (REPLICATE_API_TOKEN); ask an operator to fix it",
                )
            if response.status_code >= 400:
                raise GenerationFailure(
                    ErrorReason.PROVIDER_REJECTED_INPUT, f"Replicate refused the input: {_detail(response)}"
                )
            return dict(response.json())

    async def _find(self, step: StepInput, record: PredictionRecord, body: dict[str, Any]) -> dict[str, Any] | None:
        """Our prediction among those created around our create (same model and version, identical input), if any.

        The list is asked for `created_after`/`created_before` around the time the create was sent (a documented
        filter; list results carry no `webhook`), and a candidate is adopted only if no other generation holds it:
        two generations with the same prompt and model never share one prediction.
        """
        started = record.create_started or datetime.now(UTC)
        for attempt in range(self._s.lookup_attempts):
            if attempt:
                await asyncio.sleep(self._s.lookup_delay_seconds)
            window = {
                "created_after": _iso(started - LOOKUP_CLOCK_SKEW),
                "created_before": _iso(datetime.now(UTC) + LOOKUP_CLOCK_SKEW),
            }
            url: str | None = f"{self._base}/v1/predictions?{urlencode(window)}"
            matches: list[dict[str, Any]] = []
            pages = 0
            while url and pages < 10:
                pages += 1
                response = await retrying_request(self._client(), "GET", url, headers=self._headers, timeout=15.0)
                if response.status_code >= 400:
                    _log.warning("replicate list failed", extra={"status": response.status_code})
                    break
                page = response.json()
                matches.extend(c for c in page.get("results", []) if self._matches(c, step, body))
                url = page.get("next")
            # Oldest first: the first identical create after ours started is most likely ours.
            matches.sort(key=lambda c: _parse_time(c.get("created_at")) or started)
            for candidate in matches:
                if await self._claim(step, str(candidate.get("id") or "")):
                    _log.info("found our replicate prediction", extra={"prediction": candidate.get("id")})
                    return dict(candidate)
        return None

    def _matches(self, candidate: dict[str, Any], step: StepInput, body: dict[str, Any]) -> bool:
        if candidate.get("input") != body["input"] or candidate.get("model") != step.spec.name:
            return False
        return not step.spec.version or candidate.get("version") == step.spec.version

    async def _get(self, prediction_id: str) -> dict[str, Any]:
        """GET the prediction; 5xx, 429 and dropped connections are retried (GETs are safe), and keep trying."""
        delay = self._s.poll_initial_seconds
        while True:
            try:
                response = await retrying_request(
                    self._client(), "GET", f"{self._base}/v1/predictions/{prediction_id}",
                    headers=self._headers, timeout=self._s.request_timeout_seconds,
                )  # fmt: skip
                if response.status_code == 200:
                    return dict(response.json())
                if response.status_code == 404:
                    raise GenerationFailure(ErrorReason.PROVIDER_FAILED, f"Replicate lost prediction {prediction_id}")
                if response.status_code in (401, 403):
                    raise GenerationFailure(ErrorReason.PROVIDER_UNAVAILABLE, "Replicate rejected the API token")
                _log.warning("replicate poll failed", extra={"status": response.status_code})
            except httpx.TransportError as exc:
                _log.warning("replicate unreachable while polling", extra={"error": type(exc).__name__})
            await asyncio.sleep(delay)  # the generation's deadline bounds this loop
            delay = min(self._s.poll_max_seconds * 4, delay * 2)

    # ------------------------------------------------------------------ status handling

    async def _observe(self, record: PredictionRecord, prediction: dict[str, Any], checkpoint: Checkpoint) -> None:
        status = str(prediction.get("status") or "unknown")
        changed = record.id != prediction.get("id") or record.status != status
        record.id = str(prediction.get("id") or record.id)
        record.status = status
        record.output = prediction.get("output") if status == "succeeded" else None
        record.create_time = record.create_time or _parse_time(prediction.get("created_at")) or datetime.now(UTC)
        if changed:
            await checkpoint(_progress(prediction))

    def _result(self, step: StepInput, record: PredictionRecord, prediction: dict[str, Any]) -> StepResult:
        status = record.status
        if status == "succeeded":
            output = prediction.get("output")
            if step.kind is GenerationKind.TEXT:
                text = "".join(str(t) for t in output) if isinstance(output, list) else str(output or "")
                return StepResult(text=text.strip(), raw_output=output)
            files = [output] if isinstance(output, str) else [o for o in (output or []) if isinstance(o, str)]
            return StepResult(files=files, raw_output=output)
        error = str(prediction.get("error") or "no error message")
        if status == "failed":
            raise GenerationFailure(ErrorReason.PROVIDER_FAILED, f"the Replicate prediction failed: {error}")
        if status == "aborted":
            raise GenerationFailure(
                ErrorReason.DEADLINE_EXCEEDED,
                "Replicate aborted the prediction: its deadline passed before it started",
                retryable=True,
            )  # fmt: skip
        deadline = _parse_time(prediction.get("deadline"))
        if deadline is not None and datetime.now(UTC) >= deadline - timedelta(seconds=CANCEL_AFTER_MARGIN_SECONDS):
            raise GenerationFailure(
                ErrorReason.DEADLINE_EXCEEDED, "Replicate cancelled the prediction at its deadline", retryable=True
            )
        raise GenerationFailure(ErrorReason.CANCELED_AT_PROVIDER, "the prediction was cancelled at Replicate")

    # ------------------------------------------------------------------ webhooks

    async def _wait_for_update(self, prediction_id: str, delay: float) -> None:
        if not self._s.webhook_url:
            await asyncio.sleep(delay)
            return
        event = self._webhook_events.setdefault(prediction_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout=max(delay, self._s.poll_max_seconds))
        except TimeoutError:
            pass
        finally:
            self._webhook_events.pop(prediction_id, None)

    def deliver_webhook(self, prediction: dict[str, Any]) -> None:
        """A verified webhook delivery: wake the poller of that prediction (duplicates are harmless)."""
        prediction_id = str(prediction.get("id") or "")
        event = self._webhook_events.get(prediction_id)
        if event is not None:
            self._webhook_latest[prediction_id] = prediction
            event.set()


def _progress(prediction: dict[str, Any]) -> float:
    status = prediction.get("status")
    if status in TERMINAL:
        return 1.0
    matches = _PERCENT.findall(str(prediction.get("logs") or ""))
    if matches:
        return min(0.95, int(matches[-1]) / 100)
    return 0.3 if status == "processing" else 0.05


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    detail = str(data.get("detail") or data.get("title") or f"HTTP {response.status_code}").strip()
    fields = [f.get("field") for f in data.get("invalid_fields") or [] if isinstance(f, dict)]
    return f"{detail} ({', '.join(str(f) for f in fields)})" if fields else detail


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def svd_timing(duration_seconds: float) -> tuple[int, int]:
    """SVD's (frames, fps) for a duration: 14 or 25 frames at 5-30 fps, as close to it as the model allows
    (more frames on a tie: smoother motion)."""
    target = duration_seconds if duration_seconds > 0 else 4.0
    candidates = [
        (abs(frames / fps - target), -frames, frames, fps)
        for frames in (14, 25)
        for fps in range(SVD_MIN_FPS, SVD_MAX_FPS + 1)
    ]
    _, _, frames, fps = min(candidates)
    return frames, fps


def _clamp8(value: int, low: int, high: int) -> int:
    return max(low, min(high, value - value % 8))


def nearest_aspect_ratio(width: int, height: int) -> str:
    """flux-schnell takes an aspect ratio, not a size: the closest one to width:height."""
    target = width / height if height else 1.0

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(int(w) / int(h) - target)

    return min(_ASPECT_RATIOS, key=distance)
