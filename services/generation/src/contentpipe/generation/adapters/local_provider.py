"""The `local` provider: offline and deterministic in prompt and seed (real JPEG, real H.264+AAC MP4, a caption)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from contentpipe.generation.adapters.media import MediaError, encode_image, encode_video, seed_for
from contentpipe.generation.domain.catalogue import ModelSpec
from contentpipe.generation.domain.model import ErrorReason, GenerationFailure, GenerationKind, PredictionRecord
from contentpipe.generation.service_layer.ports import Checkpoint, StepInput, StepResult

_OPENERS = ("Behold", "Meet", "Discover", "Introducing", "Here is", "Say hello to")
_CLOSERS = ("#contentpipe", "#madewithcontentpipe", "#daily", "#create")


def caption_for(prompt: str, seed: int | None, max_tokens: int) -> str:
    """A short, deterministic caption built from the prompt (roughly one token per word)."""
    _, digest = seed_for(prompt, seed)
    words = " ".join(prompt.split())
    text = f"{_OPENERS[digest[0] % len(_OPENERS)]}: {words} {_CLOSERS[digest[1] % len(_CLOSERS)]}"
    return " ".join(text.split(" ")[: max(1, max_tokens)])


class LocalProvider:
    name = "local"

    def __init__(self, scratch_file: Callable[[str], Path], *, time_limit_seconds: float = 1800.0) -> None:
        self._scratch_file = scratch_file
        self._time_limit = time_limit_seconds

    async def run(self, step: StepInput, record: PredictionRecord, checkpoint: Checkpoint) -> StepResult:
        # Our own id: re-running after a restart just produces the same bytes again.
        record.id = f"local-{step.generation_id}-{step.role}"
        record.status = "processing"
        record.create_time = record.create_time or datetime.now(UTC)
        options = step.options
        if step.kind is GenerationKind.TEXT:
            # Instant and deterministic: no progress to show, and the generation's final save records it all.
            record.status = "succeeded"
            return StepResult(text=caption_for(step.prompt, options.seed, options.max_tokens or 64))
        await checkpoint(0.1)
        try:
            if step.kind is GenerationKind.IMAGE:
                path = self._scratch_file(".jpg")
                await encode_image(
                    path,
                    prompt=step.prompt,
                    seed=options.seed,
                    width=options.width,
                    height=options.height,
                    limit_seconds=self._time_limit,
                )
                result = StepResult(files=[path.as_uri()])
            else:
                path = self._scratch_file(".mp4")
                await encode_video(
                    path,
                    prompt=step.prompt,
                    seed=options.seed,
                    width=options.width,
                    height=options.height,
                    fps=options.fps,
                    frames=options.frame_count(),
                    limit_seconds=self._time_limit,
                )
                result = StepResult(files=[path.as_uri()])
        except MediaError as exc:
            record.status = "failed"
            raise GenerationFailure(ErrorReason.PROVIDER_FAILED, f"local encoding failed: {exc}") from exc
        except TimeoutError as exc:
            # Only our own encoder limit raises TimeoutError here (the generation's deadline cancels the task
            # instead). The encode is deterministic: a retry would burn the same CPU and stop at the same limit.
            record.status = "failed"
            raise GenerationFailure(
                ErrorReason.DEADLINE_EXCEEDED,
                f"local encoding did not finish within GENERATION_LOCAL_TIME_LIMIT ({self._time_limit:g}s) and was "
                "stopped; ask for fewer frames (shorter duration, lower fps) or a smaller size, or raise "
                "GENERATION_LOCAL_TIME_LIMIT (up to GENERATION_DEADLINE)",
                retryable=False,
            ) from exc
        record.status = "succeeded"
        await checkpoint(1.0)
        return result

    async def cancel(self, record: PredictionRecord, spec: ModelSpec) -> None:
        """Nothing runs remotely; the local task is cancelled by the worker."""
