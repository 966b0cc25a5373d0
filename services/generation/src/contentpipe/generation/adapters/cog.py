"""The `cog` provider: self-hosted models served by Cog's HTTP server (reference A11).

`PUT /predictions/{id}` with our own id is an idempotent create: a retry after a timeout or a crash attaches
to the same prediction instead of starting a second one. The id is recorded before the first PUT.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from contentpipe.generation.domain.catalogue import ModelSpec
from contentpipe.generation.domain.model import ErrorReason, GenerationFailure, GenerationKind, PredictionRecord
from contentpipe.generation.service_layer.ports import Checkpoint, StepInput, StepResult

_log = logging.getLogger(__name__)


def cog_input(step: StepInput) -> dict[str, Any]:
    """The input convention for contentpipe's Cog models: `prompt` plus the knobs of the kind."""
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
    return body


class CogProvider:
    name = "cog"

    def __init__(self, client: httpx.AsyncClient, *, retry_delay_seconds: float = 1.0) -> None:
        self._client = client
        self._retry_delay = retry_delay_seconds

    async def run(self, step: StepInput, record: PredictionRecord, checkpoint: Checkpoint) -> StepResult:
        base = step.spec.extra["base_url"].rstrip("/")
        if not record.id:
            record.id = f"{step.generation_id}-{step.role}"
            record.create_time = datetime.now(UTC)
        record.status = "starting"
        await checkpoint(0.05)  # the id is durable before the first PUT
        body = {"input": cog_input(step)}
        delay = self._retry_delay
        while True:
            remaining = (step.deadline - datetime.now(UTC)).total_seconds()
            if remaining <= 0:
                raise TimeoutError
            try:
                response = await self._client.put(
                    f"{base}/predictions/{record.id}",
                    json=body,
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
            if status == "failed" and "setup has not finished" in error.lower():
                await asyncio.sleep(delay)  # the model is still loading: wait for READY
                continue
            break
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
        raise GenerationFailure(ErrorReason.PROVIDER_FAILED, f"the Cog prediction failed: {error or status}")

    async def cancel(self, record: PredictionRecord, spec: ModelSpec) -> None:
        if not record.id:
            return
        base = spec.extra["base_url"].rstrip("/")
        response = await self._client.post(f"{base}/predictions/{record.id}/cancel", timeout=10.0)
        if response.status_code not in (200, 404):
            _log.warning("cog cancel refused", extra={"status": response.status_code, "prediction": record.id})
