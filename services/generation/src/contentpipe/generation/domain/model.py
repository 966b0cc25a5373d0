"""The Generation resource and its life cycle: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELED."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from contentpipe.common.errors import FailedPrecondition


class GenerationKind(StrEnum):
    VIDEO = "VIDEO"
    IMAGE = "IMAGE"
    TEXT = "TEXT"


class GenerationState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({GenerationState.SUCCEEDED, GenerationState.FAILED, GenerationState.CANCELED})


class ErrorReason(StrEnum):
    """Why a generation failed; each reason tells a person what to do next."""

    PROVIDER_FAILED = "PROVIDER_FAILED"
    PROVIDER_REJECTED_INPUT = "PROVIDER_REJECTED_INPUT"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    OUTPUT_UNREADABLE = "OUTPUT_UNREADABLE"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
    CANCELED_AT_PROVIDER = "CANCELED_AT_PROVIDER"


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Knobs of a generation; zero means "the model's default" until the catalogue resolves it."""

    duration_seconds: float = 0.0
    width: int = 0
    height: int = 0
    fps: int = 0
    seed: int | None = None
    motion_strength: int = 0
    input_image_uri: str = ""
    max_tokens: int = 0
    model_input: dict[str, Any] = field(default_factory=dict)

    def frame_count(self) -> int:
        """Frames a video of these options has: fps x duration, at least one."""
        return max(1, round(self.fps * self.duration_seconds))

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration_seconds": self.duration_seconds,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "seed": self.seed,
            "motion_strength": self.motion_strength,
            "input_image_uri": self.input_image_uri,
            "max_tokens": self.max_tokens,
            "model_input": self.model_input,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationOptions:
        return cls(
            duration_seconds=float(data.get("duration_seconds", 0.0)),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            fps=int(data.get("fps", 0)),
            seed=None if data.get("seed") is None else int(data["seed"]),
            motion_strength=int(data.get("motion_strength", 0)),
            input_image_uri=str(data.get("input_image_uri", "")),
            max_tokens=int(data.get("max_tokens", 0)),
            model_input=dict(data.get("model_input") or {}),
        )


@dataclass(slots=True)
class PredictionRecord:
    """One prediction at a provider. `id` is empty while a create is in flight whose id is not known yet
    (Replicate assigns ids); `create_key` and `create_started` let a restarted worker find it instead of
    creating a second one."""

    provider: str
    model: str
    role: str
    id: str = ""
    status: str = "creating"
    create_time: datetime | None = None
    create_key: str = ""
    create_started: datetime | None = None
    output: Any = None

    @property
    def terminal(self) -> bool:
        return self.status in PROVIDER_TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "role": self.role,
            "id": self.id,
            "status": self.status,
            "create_time": self.create_time.isoformat() if self.create_time else None,
            "create_key": self.create_key,
            "create_started": self.create_started.isoformat() if self.create_started else None,
            "output": self.output,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictionRecord:
        return cls(
            provider=data["provider"],
            model=data["model"],
            role=data["role"],
            id=data.get("id", ""),
            status=data.get("status", "creating"),
            create_time=_parse_time(data.get("create_time")),
            create_key=data.get("create_key", ""),
            create_started=_parse_time(data.get("create_started")),
            output=data.get("output"),
        )


PROVIDER_TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})


@dataclass(frozen=True, slots=True)
class Asset:
    """A stored output file in the `generated-content` bucket."""

    uri: str
    content_type: str
    size_bytes: int
    sha256: str
    storage_key: str
    width: int = 0
    height: int = 0
    duration_seconds: float = 0.0
    frame_count: int = 0
    fps: float = 0.0
    expire_time: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "content_type": self.content_type,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "storage_key": self.storage_key,
            "width": self.width,
            "height": self.height,
            "duration_seconds": self.duration_seconds,
            "frame_count": self.frame_count,
            "fps": self.fps,
            "expire_time": self.expire_time.isoformat() if self.expire_time else None,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Asset:
        return cls(
            uri=data["uri"],
            content_type=data["content_type"],
            size_bytes=int(data["size_bytes"]),
            sha256=data["sha256"],
            storage_key=data["storage_key"],
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            duration_seconds=float(data.get("duration_seconds", 0.0)),
            frame_count=int(data.get("frame_count", 0)),
            fps=float(data.get("fps", 0.0)),
            expire_time=_parse_time(data.get("expire_time")),
            metadata=dict(data.get("metadata") or {}),
        )

    def with_uri(self, uri: str, expire_time: datetime | None) -> Asset:
        return replace(self, uri=uri, expire_time=expire_time)


@dataclass(frozen=True, slots=True)
class GenerationError:
    reason: str
    message: str
    retryable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "retryable": self.retryable}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationError:
        return cls(reason=data["reason"], message=data["message"], retryable=bool(data.get("retryable")))


class GenerationFailure(Exception):
    """Raised by a provider step when the generation must end FAILED with a reason a person can act on."""

    def __init__(self, reason: ErrorReason, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.error = GenerationError(reason=reason.value, message=message, retryable=retryable)


@dataclass(slots=True)
class Generation:
    """A request for content and its result, owned by one user."""

    id: str
    owner: str
    kind: GenerationKind
    prompt: str
    options: GenerationOptions
    provider: str
    model: str
    create_time: datetime
    deadline_time: datetime
    request_id: str = ""
    state: GenerationState = GenerationState.QUEUED
    progress: float = 0.0
    predictions: list[PredictionRecord] = field(default_factory=list)
    outputs: list[Asset] = field(default_factory=list)
    text: str = ""
    error: GenerationError | None = None
    start_time: datetime | None = None
    finish_time: datetime | None = None
    # W3C trace context of the call that created it: the worker's span continues that trace (opaque here).
    trace_context: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        # Empty for a generation that was only validated (validate_only): it exists nowhere.
        return f"generations/{self.id}" if self.id else ""

    def start(self, now: datetime) -> None:
        """QUEUED -> RUNNING (idempotent for a resumed RUNNING generation)."""
        self._require_not_terminal("start")
        if self.state is GenerationState.QUEUED:
            self.state = GenerationState.RUNNING
            self.start_time = now

    def prediction_for(self, role: str) -> PredictionRecord | None:
        for prediction in self.predictions:
            if prediction.role == role:
                return prediction
        return None

    def add_prediction(self, prediction: PredictionRecord) -> None:
        self._require_not_terminal("record a prediction")
        if self.prediction_for(prediction.role) is not None:
            raise ValueError(f"prediction for role {prediction.role!r} already recorded")
        self.predictions.append(prediction)

    def report_progress(self, progress: float) -> None:
        self.progress = max(self.progress, min(1.0, max(0.0, progress)))

    def succeed(self, now: datetime, outputs: list[Asset], text: str = "") -> None:
        self._require_not_terminal("succeed")
        self.state = GenerationState.SUCCEEDED
        self.outputs = list(outputs)
        self.text = text
        self.progress = 1.0
        self.finish_time = now

    def fail(self, now: datetime, error: GenerationError) -> None:
        self._require_not_terminal("fail")
        self.state = GenerationState.FAILED
        self.error = error
        self.finish_time = now

    def cancel(self, now: datetime) -> None:
        if self.state.terminal:
            raise FailedPrecondition(
                f"generation is already {self.state.value}; only QUEUED or RUNNING generations can be cancelled",
                reason="GENERATION_ALREADY_FINISHED",
            )
        self.state = GenerationState.CANCELED
        self.finish_time = now

    def _require_not_terminal(self, action: str) -> None:
        if self.state.terminal:
            raise FailedPrecondition(f"cannot {action}: generation is already {self.state.value}")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value))
