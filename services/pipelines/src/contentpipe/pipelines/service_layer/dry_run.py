"""Validation that matches execution: each step is checked by the service that will run it.

A pipeline is only as valid as the requests its steps will make. Instead of copying the generation and
posting rules here (two copies drift), every generate_content step is sent to CreateGeneration and every
post_to_platform target to CreatePost with `validate_only`, built exactly as the engine builds them, with
templates rendered against placeholder values of the right type. What they refuse comes back as field
violations under the step's own path (`generation.options.fps` → `pipeline.steps[0].generate_content.options.fps`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from contentpipe.common.errors import (
    ContentpipeError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from contentpipe.pipelines.domain import templates, validation
from contentpipe.pipelines.domain.model import (
    GenerateContent,
    GenerationKind,
    PostToPlatform,
    SchedulePipeline,
    Step,
)
from contentpipe.pipelines.service_layer.engine.context import media_kind, number, render_options
from contentpipe.pipelines.service_layer.ports import GenerationRequest, MediaItem, Peers, PostRequest

_ZEROS = "0" * 32
_CONTENT_TYPES = {
    GenerationKind.VIDEO: "video/mp4",
    GenerationKind.IMAGE: "image/png",
    GenerationKind.TEXT: "text/plain",
}
_PLACEHOLDER_TEXT = "generated text"


def placeholder_context(
    display_name: str, steps: Sequence[Step], before: int, resolved: Mapping[str, Mapping[str, Any]]
) -> Any:
    """The template context step `before` would see after every earlier step succeeded, with placeholders.

    Types match the real ones (datetimes, numbers, lists of asset records), so filters behave as at run
    time; `resolved` holds each generate step's options with the model's defaults filled in."""
    now = datetime.now(UTC).replace(microsecond=0)
    outputs: dict[str, Any] = {}
    for step in steps[:before]:
        action = step.action
        if isinstance(action, GenerateContent):
            asset = _asset(action.kind, resolved.get(step.id, {}))
            outputs[step.id] = {
                "generation": f"generations/{_ZEROS}",
                "assets": [] if action.kind is GenerationKind.TEXT else [asset] * _asset_count(step.id, steps),
                "text": _PLACEHOLDER_TEXT if action.kind is GenerationKind.TEXT else "",
            }
        elif isinstance(action, PostToPlatform):
            outputs[step.id] = {"posts": [f"posts/{_ZEROS}" for _ in action.connections]}
        elif isinstance(action, SchedulePipeline):
            outputs[step.id] = {"job": f"jobs/pipeline-{_ZEROS}", "next_run_time": now}
    return {
        "steps": outputs,
        "run": {
            "id": _ZEROS,
            "name": f"pipelines/{_ZEROS}/runs/{_ZEROS}",
            "trigger_time": now,
            "trigger_date": now.date().isoformat(),
            "trigger_kind": "SCHEDULE",
            "nominal_time": now,
            "job": f"jobs/pipeline-{_ZEROS}",
        },
        "pipeline": {"id": _ZEROS, "name": f"pipelines/{_ZEROS}", "display_name": display_name, "revision": 1},
    }


def _asset_count(step_id: str, steps: Sequence[Step]) -> int:
    """As many placeholder assets as any later step picks by index (one when none does)."""
    picked = [
        position
        for step in steps
        if isinstance(step.action, PostToPlatform) and step.action.media_step_id == step_id
        for position in step.action.media_indexes
    ]
    return 1 + max(picked, default=0)


def _asset(kind: GenerationKind | None, options: Mapping[str, Any]) -> dict[str, Any]:
    content_type = _CONTENT_TYPES.get(kind or GenerationKind.IMAGE, "image/png")
    fps = number(options.get("fps"), int)
    duration = number(options.get("duration_seconds"), float)
    return {
        "uri": "",  # unknown until the generation ran; checks of the URI itself are left to run time
        "content_type": content_type,
        "size_bytes": 0,
        "sha256": "0" * 64,
        "width": number(options.get("width"), int),
        "height": number(options.get("height"), int),
        "duration_seconds": duration,
        "frame_count": round(fps * duration),
        "fps": fps,
        "storage_key": "",
        "expire_time": None,
    }


def _media(action: PostToPlatform, context: Mapping[str, Any]) -> tuple[MediaItem, ...]:
    if not action.media_step_id:
        return ()
    assets = context["steps"].get(action.media_step_id, {}).get("assets", [])
    indexes = list(action.media_indexes) or list(range(len(assets)))
    return tuple(
        MediaItem(
            uri=str(asset["uri"]),
            kind=media_kind(asset),
            content_type=str(asset["content_type"]),
            duration_seconds=float(asset["duration_seconds"]),
            width=int(asset["width"]),
            height=int(asset["height"]),
        )
        for position in indexes
        if 0 <= position < len(assets)
        for asset in (assets[position],)
    )


def _media_hint(action: PostToPlatform, steps: Sequence[Step]) -> str:
    """What the step attaches, added to a platform's refusal of it (the posting service does not know the steps)."""
    if not action.media_step_id:
        return ": set media_step_id"
    source = next((step.action for step in steps if step.id == action.media_step_id), None)
    if isinstance(source, GenerateContent) and source.kind is not None:
        return f"; step {action.media_step_id!r} makes {source.kind.value.lower()}"
    return ""


def _generation_field(base: str, field: str) -> str | None:
    if field == "request_id":
        return None
    return f"{base}.{field.removeprefix('generation.')}" if field.startswith("generation.") else base


def _post_field(base: str, connections_path: str, field: str) -> str | None:
    if field in ("request_id", "post.publish_time"):
        return None
    if field.startswith("post.media["):
        # The placeholder media have no URI: what is wrong with it is only known once the generation ran.
        return None if field.endswith(".uri") else f"{base}.media_step_id"
    if field == "post.media":  # the platform does not take this kind of media (or none): said of the target
        return connections_path
    if field == "post.text":
        return f"{base}.caption"
    if field == "post.connection":
        return connections_path
    if field.startswith("post.options."):
        return f"{base}.{field.removeprefix('post.')}"
    return base


async def peer_violations(display_name: str, steps: Sequence[Step], peers: Peers) -> list[FieldViolation]:
    """What the generation and posting services would refuse when the steps run, under each step's path."""
    resolved: dict[str, Mapping[str, Any]] = {}
    violations: list[FieldViolation] = []

    async def check_generation(index: int, step: Step, action: GenerateContent) -> None:
        assert action.kind is not None
        base = validation.step_path(index, step)
        try:
            context = placeholder_context(display_name, steps, index, resolved)
            prompt = templates.render_text(action.prompt, context)
        except templates.TemplateError:
            return  # reported by the static checks
        request = GenerationRequest(
            kind=action.kind, prompt=prompt, options=action.options, provider=action.provider, model=action.model
        )
        try:
            resolved[step.id] = await peers.generations.validate(request)
        except InvalidArgument as exc:
            violations.extend(_mapped(exc, lambda field: _generation_field(base, field), ""))
        except NotFound as exc:  # e.g. options.input_image_uri naming a generation that is not the caller's
            violations.append(FieldViolation(f"{base}.options.input_image_uri", exc.message))
        except (Unavailable, DeadlineExceeded) as exc:
            raise step_not_checked(base, "generation", exc) from None

    async def check_post(index: int, step: Step, action: PostToPlatform) -> None:
        base = validation.step_path(index, step)
        try:
            context = placeholder_context(display_name, steps, index, resolved)
            caption = templates.render_text(action.caption, context) if action.caption else ""
            options = render_options(action.options, context)
        except templates.TemplateError:
            return
        media = _media(action, context)
        media_hint = _media_hint(action, steps)

        async def one(position: int, connection: str) -> None:
            if not validation.CONNECTION_NAME.match(connection):
                return
            request = PostRequest(connection=connection, text=caption, media=media, options=options)
            try:
                await peers.posts.validate(request)
            except InvalidArgument as exc:
                path = validation.step_path(index, step, "connections", f"[{position}]")
                found = _mapped(exc, lambda field: _post_field(base, path, field), connection)
                violations.extend(
                    FieldViolation(v.field, v.description + media_hint) if v.field == path else v for v in found
                )
            except (NotFound, FailedPrecondition):
                return  # a missing connection is reported by the lookup; one needing re-auth can be fixed later
            except (Unavailable, DeadlineExceeded) as exc:
                raise step_not_checked(base, "oauth (posting)", exc) from None

        await asyncio.gather(*(one(position, name) for position, name in enumerate(action.connections)))

    # Generations first: their resolved options (defaults filled) shape the media the posts would attach.
    await asyncio.gather(
        *(
            check_generation(index, step, step.action)
            for index, step in enumerate(steps)
            if isinstance(step.action, GenerateContent) and step.action.kind is not None
        )
    )
    await asyncio.gather(
        *(
            check_post(index, step, step.action)
            for index, step in enumerate(steps)
            if isinstance(step.action, PostToPlatform)
        )
    )
    return violations


def step_not_checked(path: str, service: str, error: ContentpipeError) -> Unavailable:
    """A step its service could not check: never accepted unchecked (the rules live only there), so say so."""
    retry_after = error.retry_after if isinstance(error, Unavailable) else None
    return Unavailable(
        f"{path} could not be checked: the {service} service is unavailable ({error.message}); "
        "nothing was created or changed, try again when it is up",
        retry_after=retry_after if retry_after is not None else 1.0,
        reason="STEP_NOT_CHECKED",
        metadata={"unchecked": path, "service": service},
    )


def _mapped(error: ContentpipeError, place: Any, connection: str) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    violations = error.violations if isinstance(error, InvalidArgument) else ()
    for violation in violations or (FieldViolation("", error.message),):
        field = place(violation.field)
        if field is None:
            continue
        description = f"{violation.description} (for {connection})" if connection else violation.description
        found.append(FieldViolation(field, description))
    return found
