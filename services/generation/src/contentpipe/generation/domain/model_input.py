"""A model's input as the model's schema types it: JSON integers where it declares integers.

`options.model_input` reaches us as a protobuf Struct, whose numbers are all doubles: `{"decoding_t": 14}` arrives as
`14.0`, and a model whose OpenAPI input schema says `integer` refuses it (Replicate answers 422). Replicate versions
and Cog servers publish that schema (`openapi_schema` / `/openapi.json`, `components.schemas.Input`): when it is known,
each field is coerced to its declared type; when it is not, an integral float becomes an int (a `number` field takes a
JSON integer too, so that is safe in both directions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class InputSchema:
    """The JSON types of a model's input fields (`integer`, `number`, `string`, `boolean`, `array`, ...)."""

    types: Mapping[str, str] = field(default_factory=dict)
    item_types: Mapping[str, str] = field(default_factory=dict)  # element type of `array` fields

    @classmethod
    def from_openapi(cls, openapi: Any) -> InputSchema | None:
        """The `Input` schema of a Cog/Replicate OpenAPI document, or None when it has none."""
        if not isinstance(openapi, Mapping):
            return None
        schemas = (openapi.get("components") or {}).get("schemas") or {}
        properties = (schemas.get("Input") or {}).get("properties") if isinstance(schemas, Mapping) else None
        if not isinstance(properties, Mapping):
            return None
        types: dict[str, str] = {}
        items: dict[str, str] = {}
        for name, prop in properties.items():
            if not isinstance(prop, Mapping):
                continue
            kind = _declared_type(prop, schemas)
            if kind:
                types[str(name)] = kind
            item = prop.get("items")
            if kind == "array" and isinstance(item, Mapping) and (item_kind := _declared_type(item, schemas)):
                items[str(name)] = item_kind
        return cls(types=types, item_types=items)


def _declared_type(prop: Mapping[str, Any], schemas: Mapping[str, Any]) -> str:
    if isinstance(prop.get("type"), str):
        return str(prop["type"])
    # Cog writes enums as `allOf: [{"$ref": "#/components/schemas/<name>"}]` pointing at a typed enum schema.
    for ref_holder in (prop, *(prop.get("allOf") or []), *(prop.get("anyOf") or [])):
        ref = ref_holder.get("$ref") if isinstance(ref_holder, Mapping) else None
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            target = schemas.get(ref.rsplit("/", 1)[1])
            if isinstance(target, Mapping) and isinstance(target.get("type"), str):
                return str(target["type"])
    return ""


def coerce_model_input(values: Mapping[str, Any], schema: InputSchema | None = None) -> dict[str, Any]:
    """`values` with numbers typed as the schema declares them (integral floats as ints when it is unknown)."""
    result: dict[str, Any] = {}
    for name, value in values.items():
        declared = schema.types.get(name) if schema is not None else None
        if isinstance(value, list):
            item_type = schema.item_types.get(name) if schema is not None else None
            result[name] = [_coerce(item, item_type) for item in value]
        else:
            result[name] = _coerce(value, declared)
    return result


def _coerce(value: Any, declared: str | None) -> Any:
    if isinstance(value, bool) or not isinstance(value, float):
        if isinstance(value, dict):
            return coerce_model_input(value)
        if isinstance(value, list):
            return [_coerce(item, None) for item in value]
        return value
    if declared == "number":
        return value  # the model takes any number: keep what was sent
    if value.is_integer():
        return int(value)  # `integer` fields, and fields of unknown type (a number field accepts it too)
    return value  # 14.5 for an integer field: the model's own validation names the field
