"""Runs one generation to a terminal state: plans its predictions, drives the provider, stores the outputs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from contentpipe.common.errors import ContentpipeError
from contentpipe.generation.domain.catalogue import Catalogue, ModelSpec
from contentpipe.generation.domain.model import (
    Asset,
    ErrorReason,
    Generation,
    GenerationError,
    GenerationFailure,
    GenerationKind,
    PredictionRecord,
)
from contentpipe.generation.service_layer.metrics import GenerationMetrics
from contentpipe.generation.service_layer.ports import (
    AssetStore,
    GenerationRepository,
    OutputFile,
    Provider,
    RateLimiter,
    StepInput,
    StepResult,
)

_log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

_EXTENSIONS = {GenerationKind.VIDEO: "mp4", GenerationKind.IMAGE: "img", GenerationKind.TEXT: "txt"}


class GenerationStopped(Exception):
    """The stored generation became terminal under us (cancelled through the API): stop quietly."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class GenerationRunner:
    def __init__(
        self,
        repository: GenerationRepository,
        providers: Mapping[str, Provider],
        catalogue: Catalogue,
        assets: AssetStore,
        *,
        rate_limiters: Mapping[str, RateLimiter] | None = None,
        clock: Clock = _utcnow,
        metrics: GenerationMetrics | None = None,
    ) -> None:
        self._repository = repository
        self._metrics = metrics if metrics is not None else GenerationMetrics()
        self._providers = providers
        self._catalogue = catalogue
        self._assets = assets
        self._rate_limiters = rate_limiters or {}
        self._clock = clock

    def provider_of(self, generation: Generation) -> Provider:
        return self._providers[generation.provider]

    def spec_of(self, generation: Generation) -> ModelSpec:
        spec = self._catalogue.find(generation.provider, generation.model)
        if spec is None:
            raise GenerationFailure(
                ErrorReason.PROVIDER_REJECTED_INPUT,
                f"model {generation.model!r} is no longer configured for provider {generation.provider!r}",
            )
        return spec

    async def run(self, generation: Generation) -> Generation:
        """Drive `generation` to SUCCEEDED or FAILED (raises GenerationStopped if it was cancelled meanwhile)."""
        if generation.state.terminal:
            return generation
        remaining = (generation.deadline_time - self._clock()).total_seconds()
        try:
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(remaining):
                await self._run_steps(generation)
        except TimeoutError:
            await self._cancel_open_predictions(generation)
            await self._finish_failed(
                generation,
                GenerationError(
                    ErrorReason.DEADLINE_EXCEEDED.value,
                    "the generation did not finish before its deadline and was cancelled at the provider; "
                    "try a shorter or smaller request, or raise GENERATION_DEADLINE",
                    retryable=True,
                ),
            )
        except GenerationFailure as failure:
            await self._finish_failed(generation, failure.error)
        return generation

    async def _finish_failed(self, generation: Generation, error: GenerationError) -> None:
        if generation.state.terminal:
            return
        generation.fail(self._clock(), error)
        await self._save(generation)
        _log.info("generation failed", extra={"generation_id": generation.id, "reason": error.reason})

    async def _save(self, generation: Generation) -> None:
        if not await self._repository.save(generation):
            raise GenerationStopped(generation.id)
        self._metrics.finished(generation)

    async def _run_steps(self, generation: Generation) -> None:
        spec = self.spec_of(generation)
        provider = self.provider_of(generation)
        input_image = generation.options.input_image_uri
        if input_image.startswith("generations/"):
            input_image = await self._resolve_asset_input(generation, input_image)
        plan: list[tuple[str, ModelSpec]] = []
        if generation.kind is GenerationKind.VIDEO and spec.first_frame_model and not input_image:
            first = self._catalogue.find(generation.provider, spec.first_frame_model)
            if first is None:
                raise GenerationFailure(
                    ErrorReason.PROVIDER_REJECTED_INPUT,
                    f"{spec.name} needs a first frame but {spec.first_frame_model!r} is not configured",
                )
            plan.append(("first_frame", first))
        plan.append((generation.kind.value.lower(), spec))

        result = StepResult()
        for index, (role, step_spec) in enumerate(plan):
            step = StepInput(
                generation_id=generation.id,
                owner=generation.owner,
                role=role,
                kind=step_spec.kind,
                prompt=generation.prompt,
                options=generation.options,
                spec=step_spec,
                deadline=generation.deadline_time,
                input_image=input_image,
            )
            result = await self._run_step(generation, provider, step, index, len(plan))
            if role == "first_frame":
                if not result.files:
                    raise GenerationFailure(ErrorReason.PROVIDER_FAILED, "the first-frame prediction produced no image")
                input_image = result.files[0]

        outputs: list[Asset] = []
        if generation.kind is not GenerationKind.TEXT:
            if not result.files:
                raise GenerationFailure(ErrorReason.PROVIDER_FAILED, "the provider finished without an output file")
            for number, source in enumerate(result.files):
                key = f"{generation.owner}/{generation.id}/{number}.{_EXTENSIONS[generation.kind]}"
                outputs.append(
                    await self._assets.ingest(
                        OutputFile(
                            source=source,
                            key=key,
                            kind=generation.kind,
                            metadata={"provider": generation.provider, "model": spec.reference},
                        )
                    )
                )
        elif not result.text:
            raise GenerationFailure(ErrorReason.PROVIDER_FAILED, "the provider finished without any text")
        generation.succeed(self._clock(), outputs, result.text)
        await self._save(generation)
        _log.info("generation succeeded", extra={"generation_id": generation.id})

    async def _run_step(
        self, generation: Generation, provider: Provider, step: StepInput, index: int, steps: int
    ) -> StepResult:
        record = generation.prediction_for(step.role)
        if record is None:
            limiter = self._rate_limiters.get(provider.name)
            if limiter is not None:
                await limiter.acquire()  # waits, never fails: a queued generation just starts later
            record = PredictionRecord(provider=provider.name, model=step.spec.reference, role=step.role)
            generation.add_prediction(record)
            generation.start(self._clock())

        # A text generation's last prediction ends with nothing left to fetch: the save that ends the generation
        # follows at once and records the prediction too.
        ends_with_save = index == steps - 1 and generation.kind is GenerationKind.TEXT

        async def checkpoint(progress: float | None) -> None:
            if progress is not None:
                generation.report_progress((index + progress) / steps)
            if ends_with_save and record.terminal:
                return
            await self._save(generation)

        return await provider.run(step, record, checkpoint)

    async def _resolve_asset_input(self, generation: Generation, name: str) -> str:
        source = await self._repository.get(name.removeprefix("generations/"))
        if source is None or source.owner != generation.owner or not source.outputs:
            raise GenerationFailure(
                ErrorReason.PROVIDER_REJECTED_INPUT, f"options.input_image_uri: {name} has no output to use"
            )
        image = next((a for a in source.outputs if a.content_type.startswith("image/")), None)
        if image is None:
            raise GenerationFailure(ErrorReason.PROVIDER_REJECTED_INPUT, f"{name} has no image output")
        return await self._assets.inline_source(image)

    async def _cancel_open_predictions(self, generation: Generation) -> None:
        for record in generation.predictions:
            if record.terminal:
                continue
            try:
                provider = self._providers[record.provider]
                await provider.cancel(record, self.spec_of(generation))
                record.status = "canceled"
            except (ContentpipeError, GenerationFailure, OSError, TimeoutError) as exc:
                _log.warning(
                    "cancel at provider failed", extra={"generation_id": generation.id, "error": type(exc).__name__}
                )
