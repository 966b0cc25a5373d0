"""gRPC servicer for GenerationService: translate messages, call one use case, translate the result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contentpipe.api.generation.v1 import generation_service_pb2 as pb
from contentpipe.api.generation.v1 import generation_service_pb2_grpc
from contentpipe.common.auth import current_principal
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.ids import parse_name
from contentpipe.common.pagination import PageTokenCodec, keyset_after, keyset_token, page_size
from contentpipe.common.request_checks import optional_seconds
from contentpipe.generation.domain.model import (
    Asset,
    Generation,
    GenerationKind,
    GenerationOptions,
    GenerationState,
)
from contentpipe.generation.domain.validation import NewGeneration
from contentpipe.generation.service_layer.services import GenerationServices
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

_KINDS = {
    pb.GENERATION_KIND_VIDEO: GenerationKind.VIDEO,
    pb.GENERATION_KIND_IMAGE: GenerationKind.IMAGE,
    pb.GENERATION_KIND_TEXT: GenerationKind.TEXT,
}
_KINDS_PB = {kind: value for value, kind in _KINDS.items()}
_STATES = {
    pb.GENERATION_STATE_QUEUED: GenerationState.QUEUED,
    pb.GENERATION_STATE_RUNNING: GenerationState.RUNNING,
    pb.GENERATION_STATE_SUCCEEDED: GenerationState.SUCCEEDED,
    pb.GENERATION_STATE_FAILED: GenerationState.FAILED,
    pb.GENERATION_STATE_CANCELED: GenerationState.CANCELED,
}
_STATES_PB = {state: value for value, state in _STATES.items()}
_NAME = "generations/{id}"


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(UTC))
    return stamp


def new_generation_from(request: pb.CreateGenerationRequest) -> NewGeneration:
    g = request.generation
    o = g.options
    model_input: dict[str, Any] = json_format.MessageToDict(o.model_input) if o.HasField("model_input") else {}
    if g.kind not in _KINDS and g.kind != pb.GENERATION_KIND_UNSPECIFIED:
        raise InvalidArgument.single("generation.kind", f"unknown kind {g.kind}")
    return NewGeneration(
        kind=_KINDS.get(g.kind),
        prompt=g.prompt,
        options=GenerationOptions(
            duration_seconds=o.duration_seconds,
            width=o.width,
            height=o.height,
            fps=o.fps,
            seed=o.seed if o.HasField("seed") else None,
            motion_strength=o.motion_strength,
            input_image_uri=o.input_image_uri,
            max_tokens=o.max_tokens,
            model_input=model_input,
        ),
        provider=g.provider,
        model=g.model,
        request_id=request.request_id,
        generation_id=request.generation_id,
        model_input_bytes=o.model_input.ByteSize() if o.HasField("model_input") else 0,
    )


def asset_to_pb(asset: Asset) -> pb.Asset:
    return pb.Asset(
        uri=asset.uri,
        content_type=asset.content_type,
        size_bytes=asset.size_bytes,
        sha256=asset.sha256,
        width=asset.width,
        height=asset.height,
        duration_seconds=asset.duration_seconds,
        frame_count=asset.frame_count,
        fps=asset.fps,
        storage_key=asset.storage_key,
        expire_time=_ts(asset.expire_time),
        metadata=asset.metadata,
    )


def generation_to_pb(generation: Generation) -> pb.Generation:
    o = generation.options
    options = pb.GenerationOptions(
        duration_seconds=o.duration_seconds,
        width=o.width,
        height=o.height,
        fps=o.fps,
        motion_strength=o.motion_strength,
        input_image_uri=o.input_image_uri,
        max_tokens=o.max_tokens,
    )
    if o.seed is not None:
        options.seed = o.seed
    if o.model_input:
        options.model_input.update(o.model_input)
    message = pb.Generation(
        name=generation.name,
        owner=generation.owner,
        kind=_KINDS_PB[generation.kind],
        prompt=generation.prompt,
        options=options,
        provider=generation.provider,
        model=generation.model,
        state=_STATES_PB[generation.state],
        progress=generation.progress,
        predictions=[
            pb.Prediction(
                provider=p.provider,
                id=p.id,
                model=p.model,
                role=p.role,
                status=p.status,
                create_time=_ts(p.create_time),
            )
            for p in generation.predictions
        ],
        outputs=[asset_to_pb(a) for a in generation.outputs],
        text=generation.text,
        create_time=_ts(generation.create_time),
        start_time=_ts(generation.start_time),
        finish_time=_ts(generation.finish_time),
        request_id=generation.request_id,
    )
    if generation.error is not None:
        message.error.CopyFrom(
            pb.GenerationError(
                reason=generation.error.reason, message=generation.error.message, retryable=generation.error.retryable
            )
        )
    return message


class GenerationServiceServicer(generation_service_pb2_grpc.GenerationServiceServicer):
    """Thin: translate requests, call the service layer, translate results; raise ContentpipeError."""

    def __init__(self, services: GenerationServices, page_tokens: PageTokenCodec) -> None:
        self._services = services
        self._tokens = page_tokens

    async def CreateGeneration(self, request: pb.CreateGenerationRequest, context: Any) -> pb.CreateGenerationResponse:
        owner = current_principal().user_id
        generation = await self._services.create(
            owner, new_generation_from(request), validate_only=request.validate_only
        )
        return pb.CreateGenerationResponse(generation=generation_to_pb(generation))

    async def GetGeneration(self, request: pb.GetGenerationRequest, context: Any) -> pb.GetGenerationResponse:
        owner = current_principal().user_id
        generation = await self._services.get(owner, parse_name(_NAME, request.name))
        return pb.GetGenerationResponse(generation=generation_to_pb(generation))

    async def WaitGeneration(self, request: pb.WaitGenerationRequest, context: Any) -> pb.WaitGenerationResponse:
        owner = current_principal().user_id
        generation_id = parse_name(_NAME, request.name)
        if request.state and request.state not in _STATES:
            raise InvalidArgument.single("state", f"unknown state {request.state}")
        timeout = optional_seconds(request, "timeout")
        generation = await self._services.wait(owner, generation_id, seen=_STATES.get(request.state), max_wait=timeout)
        return pb.WaitGenerationResponse(generation=generation_to_pb(generation))

    async def ListGenerations(self, request: pb.ListGenerationsRequest, context: Any) -> pb.ListGenerationsResponse:
        owner = current_principal().user_id
        limit = page_size(request.page_size)
        if request.state and request.state not in _STATES:
            raise InvalidArgument.single("state", f"unknown state {request.state}")
        if request.kind and request.kind not in _KINDS:
            raise InvalidArgument.single("kind", f"unknown kind {request.kind}")
        query = f"{owner}|{request.state}|{request.kind}"
        after = keyset_after(self._tokens, request.page_token, query=query)
        items, more = await self._services.list_page(
            owner, limit=limit, state=_STATES.get(request.state), kind=_KINDS.get(request.kind), after=after
        )
        token = ""
        if more and items:
            last = items[-1]
            token = keyset_token(self._tokens, last.create_time, last.id, query=query)
        return pb.ListGenerationsResponse(generations=[generation_to_pb(g) for g in items], next_page_token=token)

    async def CancelGeneration(self, request: pb.CancelGenerationRequest, context: Any) -> pb.CancelGenerationResponse:
        owner = current_principal().user_id
        generation = await self._services.cancel(owner, parse_name(_NAME, request.name))
        return pb.CancelGenerationResponse(generation=generation_to_pb(generation))
