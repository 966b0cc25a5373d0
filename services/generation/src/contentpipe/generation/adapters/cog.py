"""The `cog` provider: self-hosted models served by Cog's HTTP server (reference A11).

`PUT /predictions/{id}` with our own id is an idempotent create *while that prediction runs*: a second PUT attaches
to it instead of starting another; once it has finished, the same PUT runs it again, and there is no GET. So, with
a webhook endpoint configured (GENERATION_WEBHOOK_PORT), predictions run asynchronously (`Prefer: respond-async`),
their results arrive by webhook and are persisted on receipt (a result that arrives while no worker waits, e.g.
right after a restart, is kept), and a prediction the Cog server accepted is never PUT again while that server
(same boot: `/health-check` `setup.started_at`) is up: a restarted worker reads the stored result, or waits for it
(Cog retries its final webhook for minutes). Only a prediction that Cog never accepted, or that a restarted Cog
server lost, is PUT again. Without a webhook endpoint the PUT is synchronous, and a crash in the middle re-runs the
prediction after it finishes. The id is recorded before the first PUT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
from contentpipe.generation.adapters.input_schemas import InputSchemaCache
from contentpipe.generation.domain.catalogue import ModelSpec
from contentpipe.generation.domain.model import ErrorReason, GenerationFailure, GenerationKind, PredictionRecord
from contentpipe.generation.domain.model_input import InputSchema, coerce_model_input
from contentpipe.generation.service_layer.ports import Checkpoint, DeliveryStore, StepInput, StepResult

_log = logging.getLogger(__name__)

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted", "refused"})
ACCEPTED = frozenset({"starting", "processing"})  # the Cog server took the prediction (answered 202, or a webhook)
PROVIDER = "cog"


def cog_input(step: StepInput, schema: InputSchema | None = None) -> dict[str, Any]:
    """The input convention for contentpipe's Cog models: `prompt` plus the knobs of the kind, numbers typed as the
    model's schema declares them (integral floats as ints when the server publishes none)."""
    o = step.options
    body: dict[str, Any] = {"prompt": step.prompt}
    if o.seed is not None:
        body["seed"] = o.seed
    if step.kind is GenerationKind.TEXT:
        body["max_tokens"] = o.max_tokens
    else:
        body.update(width=o.width, height=o.height)
        if step.input_image:
            body["input_image"] = step.input_image
    if step.kind is GenerationKind.VIDEO:
        body.update(fps=o.fps, num_frames=o.frame_count())
    body.update(o.model_input)
    return coerce_model_input(body, schema)


class CogProvider:
    name = "cog"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        webhook_base_url: str | None = None,
        sign_webhook: Callable[[str], str] | None = None,
        retry_delay_seconds: float = 1.0,
        deliveries: DeliveryStore | None = None,
        probe_interval_seconds: float = 5.0,
        redelivery_wait_seconds: float = 600.0,
    ) -> None:
        self._client = client
        self._retry_delay = retry_delay_seconds
        self._deliveries = deliveries
        self._probe_interval = probe_interval_seconds
        self._redelivery_wait = redelivery_wait_seconds
        self._webhook_base = webhook_base_url.rstrip("/") if webhook_base_url else None
        self._sign = sign_webhook
        self._events: dict[str, asyncio.Event] = {}
        self._latest: dict[str, dict[str, Any]] = {}
        self._schemas = InputSchemaCache()

    def webhook_url(self, prediction_id: str) -> str:
        """Our webhook endpoint for this prediction; Cog does not sign webhooks, so the URL carries our signature."""
        sig = self._sign(prediction_id) if self._sign is not None else ""
        return f"{self._webhook_base}/webhooks/cog?{urlencode({'id': prediction_id, 'sig': sig})}"

    def deliver_webhook(self, prediction: dict[str, Any]) -> None:
        """A verified webhook from a Cog server: keep the latest state and wake the waiting step."""
        prediction_id = str(prediction.get("id") or "")
        if prediction_id not in self._events:
            return  # nobody waits here (finished already, or the worker is not running it yet: it reads the store)
        if self._latest.get(prediction_id, {}).get("status") in TERMINAL:
            return
        self._latest[prediction_id] = prediction
        self._events[prediction_id].set()

    async def receive(self, prediction: dict[str, Any]) -> None:
        """A verified delivery: persisted first (the webhook is acknowledged only after), then handed over."""
        if self._deliveries is not None:
            await self._deliveries.save_delivery(PROVIDER, str(prediction["id"]), prediction)
        self.deliver_webhook(prediction)

    async def refuse(self, prediction_id: str, message: str) -> None:
        """A delivery we could not take (too large): the generation fails with `message` instead of waiting."""
        await self.receive({"id": prediction_id, "status": "refused", "error": message})

    async def run(self, step: StepInput, record: PredictionRecord, checkpoint: Checkpoint) -> StepResult:
        base = step.spec.extra["base_url"].rstrip("/")
        if not record.id:
            record.id = f"{step.generation_id}-{step.role}"
            record.create_time = datetime.now(UTC)
        if record.status not in ACCEPTED:
            record.status = "submitting"
        await checkpoint(0.05)  # the id is durable before the first PUT
        schema = await self._schemas.get(base, lambda: self._fetch_schema(base))
        body: dict[str, Any] = {"input": cog_input(step, schema)}
        if self._webhook_base:
            prediction = await self._run_async(base, step, record, body, checkpoint)
        else:
            prediction = await self._put(base, step, record, body, {})
            while str(prediction.get("status")) not in TERMINAL:
                # Attached to a prediction still running from before a restart: there is no GET, so ask again
                # (once it has finished, this PUT runs it again; configure webhooks to avoid that).
                await asyncio.sleep(self._retry_delay)
                prediction = await self._put(base, step, record, body, {})
        return await self._finish(step, record, prediction, checkpoint)

    async def _run_async(
        self, base: str, step: StepInput, record: PredictionRecord, body: dict[str, Any], checkpoint: Checkpoint
    ) -> dict[str, Any]:
        event = self._events.setdefault(record.id, asyncio.Event())  # before reading the store: nothing slips by
        try:
            prediction = await self._stored(record.id)
            if prediction is None:
                boot = await self._boot_id(base) if record.status in ACCEPTED else None
                if record.status in ACCEPTED and (boot is None or boot == record.create_key):
                    # Accepted by this very Cog server before our restart: it runs, or its result is on its way
                    # (Cog retries the final webhook). A PUT now would run it a second time if it has finished.
                    # (Server unreachable: wait as well; the probe below submits again if it comes back rebooted.)
                    _log.info("cog prediction accepted before a restart; waiting for its result",
                              extra={"generation_id": step.generation_id, "prediction": record.id})  # fmt: skip
                    prediction = {"id": record.id, "status": record.status}
                else:
                    prediction = await self._submit(base, step, record, body, checkpoint)
            idle_since: float | None = None
            while str(prediction.get("status")) not in TERMINAL:
                status = str(prediction.get("status") or record.status)
                if status != record.status:
                    record.status = status
                    await checkpoint(0.3 if status == "processing" else None)
                try:
                    await asyncio.wait_for(event.wait(), timeout=self._probe_interval)
                except TimeoutError:
                    prediction = await self._stored(record.id) or prediction
                    if str(prediction.get("status")) in TERMINAL:
                        continue
                    idle_since = await self._check_still_coming(base, step, record, idle_since)
                    if record.status == "submitting":
                        prediction = await self._submit(base, step, record, body, checkpoint)
                    continue
                event.clear()
                prediction = self._latest.get(record.id, prediction)
            return prediction
        finally:
            self._events.pop(record.id, None)
            self._latest.pop(record.id, None)

    async def _submit(
        self, base: str, step: StepInput, record: PredictionRecord, body: dict[str, Any], checkpoint: Checkpoint
    ) -> dict[str, Any]:
        """PUT the prediction (async, results by webhook) and record which Cog boot accepted it."""
        boot = await self._boot_id(base)
        body = {**body, "webhook": self.webhook_url(record.id), "webhook_events_filter": ["start", "completed"]}
        prediction = await self._put(base, step, record, body, {"prefer": "respond-async"})
        record.create_key = boot or ""
        record.status = str(prediction.get("status") or "starting")
        if record.status not in TERMINAL and record.status not in ACCEPTED:
            record.status = "starting"
        await checkpoint(None)  # accepted: from now on a restart waits for the result instead of PUTting again
        return prediction

    async def _check_still_coming(
        self, base: str, step: StepInput, record: PredictionRecord, idle_since: float | None
    ) -> float | None:
        """While waiting: is the result still coming? Returns since when the Cog server has been idle (None: busy).

        The Cog server restarted (another boot id): the prediction is lost with it, so `record.status` turns
        `submitting` (submit again). The server has been idle for longer than it retries a final webhook and nothing
        came: the result is lost, fail (retryable)."""
        health = await self._health(base)
        if health is None:
            return idle_since  # unreachable: keep waiting (the deadline bounds it)
        boot = _boot_of(health)
        if record.create_key and boot and boot != record.create_key:
            _log.warning("cog server restarted; submitting the prediction again",
                         extra={"generation_id": step.generation_id, "prediction": record.id})  # fmt: skip
            record.status = "submitting"
            return None
        if str(health.get("status")) == "BUSY":
            return None
        now = time.monotonic()
        if idle_since is None:
            return now
        if now - idle_since > self._redelivery_wait:
            raise GenerationFailure(
                ErrorReason.PROVIDER_FAILED,
                f"the Cog prediction {record.id} finished but its result never arrived (the service was unreachable "
                "for longer than the Cog server retries its webhook); try again",
                retryable=True,
            )
        return idle_since

    async def _stored(self, prediction_id: str) -> dict[str, Any] | None:
        if self._deliveries is None:
            return None
        stored = await self._deliveries.delivery(PROVIDER, prediction_id)
        if stored is not None and str(stored.get("status")) in TERMINAL:
            return stored
        return None

    async def _health(self, base: str) -> dict[str, Any] | None:
        try:
            response = await self._client.get(f"{base}/health-check", timeout=5.0)
            data = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def _boot_id(self, base: str) -> str | None:
        """When the Cog server's setup started: a different value means another boot (predictions lost)."""
        health = await self._health(base)
        return _boot_of(health) if health is not None else None

    async def _fetch_schema(self, base: str) -> InputSchema | None:
        """The server's `/openapi.json` input schema (some Cog builds answer an error instead: then None)."""
        try:
            response = await self._client.get(f"{base}/openapi.json", timeout=5.0)
            return InputSchema.from_openapi(response.json()) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            _log.warning("cog openapi schema unavailable", extra={"base_url": base, "error": type(exc).__name__})
            return None

    async def _put(
        self, base: str, step: StepInput, record: PredictionRecord, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        delay = self._retry_delay
        while True:
            remaining = (step.deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                raise TimeoutError
            try:
                response = await self._client.put(
                    f"{base}/predictions/{record.id}",
                    json=body,
                    headers=headers,
                    timeout=httpx.Timeout(connect=5.0, read=remaining, write=30.0, pool=30.0),
                )
            except httpx.TransportError as exc:
                # The same PUT again is safe: Cog attaches to the prediction with this id.
                _log.warning("cog server unreachable; retrying", extra={"error": type(exc).__name__, "base_url": base})
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
                continue
            if response.status_code >= 500 or response.status_code == 409:
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
                continue
            if response.status_code == 422:
                raise GenerationFailure(
                    ErrorReason.PROVIDER_REJECTED_INPUT, f"the Cog model refused the input: {response.text[:300]}"
                )
            if response.status_code >= 400:
                raise GenerationFailure(
                    ErrorReason.PROVIDER_FAILED, f"the Cog server answered HTTP {response.status_code}"
                )
            prediction = response.json()
            status = str(prediction.get("status") or "unknown")
            error = str(prediction.get("error") or "")
            if status == "failed" and ("setup has not finished" in error.lower() or "at capacity" in error.lower()):
                # The model is still loading, or all its slots are busy: nothing ran, ask again.
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
                continue
            return dict(prediction)

    async def _finish(
        self, step: StepInput, record: PredictionRecord, prediction: dict[str, Any], checkpoint: Checkpoint
    ) -> StepResult:
        status = str(prediction.get("status") or "unknown")
        error = str(prediction.get("error") or "")
        record.status = status
        await checkpoint(1.0 if status == "succeeded" else None)
        if status == "succeeded":
            output = prediction.get("output")
            if step.kind is GenerationKind.TEXT:
                text = "".join(str(t) for t in output) if isinstance(output, list) else str(output or "")
                return StepResult(text=text.strip())
            files = [output] if isinstance(output, str) else [o for o in output or [] if isinstance(o, str)]
            return StepResult(files=files)
        if status == "canceled":
            raise GenerationFailure(ErrorReason.CANCELED_AT_PROVIDER, "the prediction was cancelled on the Cog server")
        if status == "refused":
            record.status = "failed"
            raise GenerationFailure(ErrorReason.OUTPUT_TOO_LARGE, error)
        raise GenerationFailure(ErrorReason.PROVIDER_FAILED, f"the Cog prediction failed: {error or status}")

    async def cancel(self, record: PredictionRecord, spec: ModelSpec) -> None:
        if not record.id:
            return
        base = spec.extra["base_url"].rstrip("/")
        response = await self._client.post(f"{base}/predictions/{record.id}/cancel", timeout=10.0)
        if response.status_code not in (200, 404):
            _log.warning("cog cancel refused", extra={"status": response.status_code, "prediction": record.id})


def _boot_of(health: dict[str, Any]) -> str:
    setup = health.get("setup")
    return str(setup.get("started_at") or "") if isinstance(setup, dict) else ""
