"""Input schemas of the Replicate models the fake serves (reference A9), and a strict validator of them.

Replicate validates a create's `input` against the version's OpenAPI `Input` schema and answers 422
`Input validation failed` with `invalid_fields` (reference A5); this does the same: declared types (an `integer`
field refuses `14.0`), enums, bounds, and no unknown fields.
"""

from __future__ import annotations

from typing import Any


def _int(default: int | None = None, *, minimum: int | None = None, maximum: int | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "integer"}
    if default is not None:
        prop["default"] = default
    if minimum is not None:
        prop["minimum"] = minimum
    if maximum is not None:
        prop["maximum"] = maximum
    return prop


def _enum(name: str, default: str) -> dict[str, Any]:
    return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": default}


_SVD = {
    "properties": {
        "input_image": {"type": "string", "format": "uri"},
        "video_length": _enum("video_length", "14_frames_with_svd"),
        "sizing_strategy": _enum("sizing_strategy", "maintain_aspect_ratio"),
        "frames_per_second": _int(6, minimum=5, maximum=30),
        "motion_bucket_id": _int(127, minimum=1, maximum=255),
        "cond_aug": {"type": "number", "default": 0.02},
        "decoding_t": _int(14),
        "seed": {"type": "integer"},
    },
    "required": ["input_image"],
}
_SVD_ENUMS = {
    "video_length": {"type": "string", "enum": ["14_frames_with_svd", "25_frames_with_svd_xt"]},
    "sizing_strategy": {"type": "string", "enum": ["maintain_aspect_ratio", "crop_to_16_9", "use_image_dimensions"]},
}
_FLUX = {
    "properties": {
        "prompt": {"type": "string"},
        "aspect_ratio": _enum("aspect_ratio", "1:1"),
        "num_outputs": _int(1, minimum=1, maximum=4),
        "num_inference_steps": _int(4, minimum=1, maximum=4),
        "seed": {"type": "integer"},
        "output_format": _enum("output_format", "webp"),
        "output_quality": _int(80, minimum=0, maximum=100),
        "go_fast": {"type": "boolean", "default": True},
        "megapixels": _enum("megapixels", "1"),
        "disable_safety_checker": {"type": "boolean", "default": False},
    },
    "required": ["prompt"],
}
_FLUX_ENUMS = {
    "aspect_ratio": {
        "type": "string",
        "enum": ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"],
    },
    "output_format": {"type": "string", "enum": ["webp", "jpg", "png"]},
    "megapixels": {"type": "string", "enum": ["1", "0.25"]},
}
_SDXL = {
    "properties": {
        "prompt": {"type": "string"},
        "negative_prompt": {"type": "string"},
        "image": {"type": "string", "format": "uri"},
        "mask": {"type": "string", "format": "uri"},
        "width": _int(1024),
        "height": _int(1024),
        "num_outputs": _int(1, minimum=1, maximum=4),
        "scheduler": {"type": "string"},
        "num_inference_steps": _int(50, minimum=1, maximum=500),
        "guidance_scale": {"type": "number", "minimum": 1, "maximum": 50},
        "prompt_strength": {"type": "number"},
        "refine": {"type": "string"},
        "high_noise_frac": {"type": "number"},
        "seed": {"type": "integer"},
        "apply_watermark": {"type": "boolean"},
        "disable_safety_checker": {"type": "boolean"},
        "lora_scale": {"type": "number"},
    },
}
_LLAMA = {
    "properties": {
        "prompt": {"type": "string"},
        "system_prompt": {"type": "string"},
        "max_tokens": _int(512),
        "min_tokens": _int(0),
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "top_k": _int(50),
        "presence_penalty": {"type": "number"},
        "frequency_penalty": {"type": "number"},
        "stop_sequences": {"type": "string"},
        "prompt_template": {"type": "string"},
        "seed": {"type": "integer"},
    },
}
_ZEROSCOPE = {
    "properties": {
        "prompt": {"type": "string"},
        "negative_prompt": {"type": "string"},
        "width": _int(576),
        "height": _int(320),
        "num_frames": _int(24),
        "fps": _int(8),
        "guidance_scale": {"type": "number"},
        "num_inference_steps": _int(50),
        "model_name": {"type": "string"},
        "seed": {"type": "integer"},
    },
}

MODEL_SCHEMAS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "stability-ai/stable-video-diffusion": (_SVD, _SVD_ENUMS),
    "black-forest-labs/flux-schnell": (_FLUX, _FLUX_ENUMS),
    "stability-ai/sdxl": (_SDXL, {}),
    "meta/meta-llama-3-8b-instruct": (_LLAMA, {}),
    "meta/meta-llama-3-70b-instruct": (_LLAMA, {}),
    "anotherjesse/zeroscope-v2-xl": (_ZEROSCOPE, {}),
}


def openapi_schema(model: str) -> dict[str, Any] | None:
    """The `openapi_schema` of a model version as Replicate publishes it (only the parts clients read)."""
    found = MODEL_SCHEMAS.get(model)
    if found is None:
        return None
    inputs, enums = found
    return {
        "openapi": "3.0.2",
        "components": {"schemas": {"Input": {"type": "object", "title": "Input", **inputs}, **enums}},
    }


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def validate_input(model: str, values: dict[str, Any]) -> list[dict[str, str]]:
    """The `invalid_fields` Replicate would report for this input (empty: valid). Unknown models accept anything."""
    found = MODEL_SCHEMAS.get(model)
    if found is None:
        return []
    inputs, enums = found
    properties: dict[str, Any] = inputs["properties"]
    problems: list[dict[str, str]] = []

    def bad(kind: str, name: str, description: str) -> None:
        problems.append({"type": kind, "field": f"input.{name}", "description": description})

    for name in inputs.get("required", []):
        if name not in values:
            bad("required", name, f"{name} is required")
    for name, value in values.items():
        prop = properties.get(name)
        if prop is None:
            bad("additional_property_not_allowed", name, f"Additional property {name} is not allowed")
            continue
        ref = (prop.get("allOf") or [{}])[0].get("$ref", "")
        enum = enums.get(ref.rsplit("/", 1)[-1], {}) if ref else {}
        declared = prop.get("type") or enum.get("type")
        given = _json_type(value)
        if declared and given != declared and not (declared == "number" and given == "integer"):
            bad("invalid_type", name, f"Invalid type. Expected: {declared}, given: {given}")
            continue
        if enum and value not in enum["enum"]:
            bad("enum", name, f"{name} must be one of the following: " + ", ".join(f'"{v}"' for v in enum["enum"]))
        if "minimum" in prop and isinstance(value, int | float) and value < prop["minimum"]:
            bad("number_gte", name, f"Must be greater than or equal to {prop['minimum']}")
        if "maximum" in prop and isinstance(value, int | float) and value > prop["maximum"]:
            bad("number_lte", name, f"Must be less than or equal to {prop['maximum']}")
    return problems
