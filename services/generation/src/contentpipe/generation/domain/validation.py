"""Validation of a new generation against the catalogue; every problem becomes a field violation."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from contentpipe.common.errors import FieldViolation, InvalidArgument
from contentpipe.common.ids import is_id
from contentpipe.generation.domain.catalogue import Catalogue, ModelSpec
from contentpipe.generation.domain.model import GenerationKind, GenerationOptions

MAX_PROMPT_CHARS = 4000
MAX_REQUEST_ID_CHARS = 128
MAX_MODEL_INPUT_BYTES = 16_384
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]+$")
_GENERATION_ASSET = re.compile(r"^generations/[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_SEED = (-(2**63), 2**63 - 1)

PREFIX = "generation"
# Fields of CreateGenerationRequest itself; every other field is inside its `generation`.
_REQUEST_FIELDS = frozenset({"request_id", "generation_id"})


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """What CreateGeneration asked for, before validation."""

    kind: GenerationKind | None
    prompt: str
    options: GenerationOptions
    provider: str = ""
    model: str = ""
    request_id: str = ""
    model_input_bytes: int = 0
    generation_id: str = ""  # empty: the service chooses


@dataclass(frozen=True, slots=True)
class ValidGeneration:
    """A validated request: the provider and model are resolved and zero options replaced by the model's defaults."""

    kind: GenerationKind
    prompt: str
    options: GenerationOptions
    spec: ModelSpec


def validate_new_generation(request: NewGeneration, catalogue: Catalogue) -> ValidGeneration:
    """Return the resolved request or raise InvalidArgument listing every bad field at once."""
    violations: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        violations.append(FieldViolation(field if field in _REQUEST_FIELDS else f"{PREFIX}.{field}", description))

    if request.request_id:
        if len(request.request_id) > MAX_REQUEST_ID_CHARS:
            bad("request_id", f"at most {MAX_REQUEST_ID_CHARS} characters")
        elif not _REQUEST_ID.match(request.request_id):
            bad("request_id", "only letters, digits and . _ : - are allowed")
    if request.generation_id and not is_id(request.generation_id):
        bad("generation_id", "must be 32 lowercase hex characters (0-9, a-f), or empty to let the service choose")

    kind = request.kind
    if kind is None:
        bad("kind", "required: VIDEO, IMAGE or TEXT")
    prompt = request.prompt.strip()
    if not prompt:
        bad("prompt", "required; 1 to 4,000 characters")
    elif len(request.prompt) > MAX_PROMPT_CHARS:
        bad("prompt", f"at most {MAX_PROMPT_CHARS:,} characters, got {len(request.prompt):,}")

    provider = request.provider or catalogue.default_provider
    spec: ModelSpec | None = None
    if provider in catalogue.unconfigured:
        bad("provider", f"provider {provider!r} is not configured on this server: {catalogue.unconfigured[provider]}")
    elif provider not in catalogue.providers:
        bad("provider", f"unknown provider {provider!r}; configured: {', '.join(catalogue.providers)}")
    elif kind is not None:
        if request.model:
            spec = catalogue.find(provider, request.model)
            if spec is None:
                known = ", ".join(s.name for s in catalogue.models_for(provider))
                bad("model", f"unknown model {request.model!r} for provider {provider!r}; known: {known}")
            elif spec.kind is not kind:
                bad("model", f"model {spec.name!r} produces {spec.kind.value}, not {kind.value}")
                spec = None
        else:
            spec = catalogue.default_for(provider, kind)
            if spec is None:
                bad("model", f"provider {provider!r} has no model configured for {kind.value}")

    if request.model_input_bytes > MAX_MODEL_INPUT_BYTES:
        bad("options.model_input", f"at most {MAX_MODEL_INPUT_BYTES:,} bytes of JSON")

    options = request.options
    if kind is not None:
        options = _check_options(kind, options, spec, bad)

    if violations:
        first = violations[0]
        raise InvalidArgument(f"{first.field}: {first.description}", violations)
    assert kind is not None and spec is not None
    return ValidGeneration(kind=kind, prompt=request.prompt, options=options, spec=spec)


def _check_options(  # noqa: PLR0915 - one rule per line reads best here
    kind: GenerationKind, options: GenerationOptions, spec: ModelSpec | None, bad: Callable[[str, str], None]
) -> GenerationOptions:
    if options.seed is not None and not (_SEED[0] <= options.seed <= _SEED[1]):
        bad("options.seed", "must fit a signed 64-bit integer")
    uri = options.input_image_uri
    if uri:
        if kind is GenerationKind.TEXT:
            bad("options.input_image_uri", "not used for TEXT generations")
        elif not (uri.startswith(("http://", "https://")) or _GENERATION_ASSET.match(uri)):
            bad("options.input_image_uri", "must be an http(s) URL or generations/{id}")
    if kind is GenerationKind.TEXT:
        for name, value in (("width", options.width), ("height", options.height), ("fps", options.fps)):
            if value:
                bad(f"options.{name}", "not used for TEXT generations")
        if options.duration_seconds:
            bad("options.duration_seconds", "not used for TEXT generations")
        if options.max_tokens < 0 or options.max_tokens > 4096:
            bad("options.max_tokens", "must be 1 to 4,096 (0: model default)")
        if spec is None:
            return options
        max_tokens = options.max_tokens or spec.default_max_tokens
        if options.max_tokens and options.max_tokens not in spec.max_tokens:
            bad("options.max_tokens", f"must be {spec.max_tokens.describe()} for {spec.name}")
        return replace(options, max_tokens=max_tokens)

    if options.max_tokens:
        bad("options.max_tokens", f"only used for TEXT generations, not {kind.value}")
    if kind is GenerationKind.IMAGE:
        if options.fps:
            bad("options.fps", "only used for VIDEO generations")
        if options.duration_seconds:
            bad("options.duration_seconds", "only used for VIDEO generations")
        if options.motion_strength:
            bad("options.motion_strength", "only used for VIDEO generations")
    # General bounds first (the contract's), then the model's own, so the message says which applies.
    for name, value in (("width", options.width), ("height", options.height)):
        if value and not (64 <= value <= 2048):
            bad(f"options.{name}", f"must be 64 to 2048 pixels, got {value}")
        elif value and spec is not None:
            allowed = spec.width if name == "width" else spec.height
            if value not in allowed:
                bad(f"options.{name}", f"must be {allowed.describe()} pixels for {spec.name}, got {value}")
            elif value % spec.size_multiple:
                bad(f"options.{name}", f"must be a multiple of {spec.size_multiple} for {spec.name}, got {value}")
        elif value and value % 8:
            bad(f"options.{name}", f"must be a multiple of 8, got {value}")
    if kind is GenerationKind.VIDEO:
        if options.fps and not (1 <= options.fps <= 60):
            bad("options.fps", f"must be 1 to 60, got {options.fps}")
        elif options.fps and spec is not None and options.fps not in spec.fps:
            bad("options.fps", f"must be {spec.fps.describe()} for {spec.name}, got {options.fps}")
        duration = options.duration_seconds
        if duration and not (0.5 <= duration <= 30):
            bad("options.duration_seconds", f"must be 0.5 to 30 seconds, got {duration:g}")
        elif duration and spec is not None and duration not in spec.duration:
            bad("options.duration_seconds", f"must be {spec.duration.describe()} seconds for {spec.name}")
        if options.motion_strength and not (1 <= options.motion_strength <= 255):
            bad("options.motion_strength", f"must be 1 to 255, got {options.motion_strength}")
    if spec is None:
        return options
    resolved = replace(
        options,
        width=options.width or spec.default_width,
        height=options.height or spec.default_height,
    )
    if kind is GenerationKind.VIDEO:
        resolved = replace(
            resolved,
            fps=options.fps or spec.default_fps,
            duration_seconds=options.duration_seconds or spec.default_duration,
            motion_strength=options.motion_strength or 127,
        )
        if spec.max_frames and resolved.frame_count() > spec.max_frames:
            field = "duration_seconds" if options.duration_seconds else "fps"
            bad(
                f"options.{field}",
                f"{spec.name} produces at most {spec.max_frames} frames; fps x duration is {resolved.frame_count()}",
            )
    return resolved
