"""What a step sees of its run: the template context, rendered options, media items from earlier steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contentpipe.common.error_class import ErrorClass
from contentpipe.pipelines.domain import templates
from contentpipe.pipelines.domain.model import (
    PipelineRun,
    PostToPlatform,
    StepError,
    StepOutputs,
)
from contentpipe.pipelines.service_layer.engine.core import StepFailed
from contentpipe.pipelines.service_layer.ports import (
    MediaItem,
)


def outputs_context(outputs: StepOutputs | None) -> dict[str, Any]:
    if outputs is None:
        return {}
    return {
        "generation": outputs.generation,
        "assets": [dict(asset) for asset in outputs.assets],
        "text": outputs.text,
        "posts": list(outputs.posts),
        "job": outputs.job,
        "next_run_time": outputs.next_run_time,
    }


def template_context(run: PipelineRun) -> dict[str, Any]:
    trigger = run.trigger
    return {
        "steps": {step_run.step_id: outputs_context(step_run.outputs) for step_run in run.steps if step_run.state.done},
        "run": {
            "id": run.id,
            "name": run.name,
            "trigger_time": trigger.trigger_time,
            "trigger_date": trigger.trigger_time.date().isoformat(),
            "trigger_kind": trigger.kind.value,
            "nominal_time": trigger.nominal_time,
            "job": trigger.job,
        },
        "pipeline": {
            "id": run.pipeline_id,
            "name": f"pipelines/{run.pipeline_id}",
            "display_name": run.pipeline_display_name,
            "revision": run.pipeline_revision,
        },
    }


def render_options(options: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [walk(item) for item in value]
        if isinstance(value, str):
            return templates.render_text(value, context)
        return value

    rendered: dict[str, Any] = walk(options)
    return rendered


def media_kind(asset: Mapping[str, Any]) -> str:
    content_type = str(asset.get("content_type", ""))
    if content_type.startswith("image/"):
        return "IMAGE"
    return "VIDEO"


def number(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value or 0)
    except (TypeError, ValueError):
        return kind(0)


def media_items(run: PipelineRun, index: int, action: PostToPlatform) -> tuple[MediaItem, ...]:
    if not action.media_step_id:
        return ()
    step_id = run.definition[index].id
    source = next((s for s in run.steps if s.step_id == action.media_step_id), None)
    assets = source.outputs.assets if source is not None and source.outputs is not None else ()
    indexes = list(action.media_indexes) or list(range(len(assets)))
    media: list[MediaItem] = []
    for position in indexes:
        if position >= len(assets):
            raise StepFailed(
                StepError(
                    ErrorClass.PERMANENT,
                    "MEDIA_INDEX_OUT_OF_RANGE",
                    f"step {step_id!r}: step {action.media_step_id!r} produced {len(assets)} asset(s); "
                    f"index {position} does not exist",
                )
            )
        asset = assets[position]
        media.append(
            MediaItem(
                uri=str(asset.get("uri", "")),
                kind=media_kind(asset),
                content_type=str(asset.get("content_type", "")),
                size_bytes=number(asset.get("size_bytes"), int),
                duration_seconds=number(asset.get("duration_seconds"), float),
                width=number(asset.get("width"), int),
                height=number(asset.get("height"), int),
                sha256=str(asset.get("sha256", "")),
            )
        )
    if not media:
        raise StepFailed(
            StepError(
                ErrorClass.PERMANENT,
                "NO_MEDIA",
                f"step {step_id!r}: step {action.media_step_id!r} produced no assets to attach",
            )
        )
    return tuple(media)
