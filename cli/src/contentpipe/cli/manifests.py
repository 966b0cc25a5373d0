"""Manifests: YAML or JSON files mirroring a proto message (proto3 JSON mapping), checked with field paths.

The check runs before anything is sent so a typo names its place (`steps[1].generate_content.promt: unknown
field, did you mean "prompt"?`); the server still validates the meaning and its violations are shown the same way.
Two conveniences, both resolved client-side before parsing: enum values may drop their type prefix
(`kind: VIDEO` for `GENERATION_KIND_VIDEO`), and a connection may be named `@<platform>` (`@outbox`) when the
user has exactly one connection on that platform.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml  # type: ignore[import-untyped]
from contentpipe.cli.errors import EXIT_INVALID, EXIT_USAGE, CliError, Violation
from contentpipe.cli.output import enum_prefix
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

MessageT = TypeVar("MessageT", bound=Message)

# Well-known types whose JSON form is a string/number/object of their own: checked by parsing them alone.
_WELL_KNOWN = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
}
_INT_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}


def read_document(path: str) -> Any:
    """Parse a YAML or JSON file (`-` reads stdin); YAML is a superset of JSON so one parser serves both."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise CliError(f"{path}: not valid YAML or JSON{where}: {getattr(exc, 'problem', exc)}", EXIT_USAGE) from None


def _field_by_key(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    field = descriptor.fields_by_name.get(key)
    if field is not None:
        return field
    for candidate in descriptor.fields:
        if candidate.json_name == key:
            return candidate
    return None


def _enum_value(enum: EnumDescriptor, value: Any) -> tuple[Any, str | None]:
    """Normalise an enum value (full name, short name or number); returns (value, error)."""
    if isinstance(value, bool):
        return value, f"expected one of {', '.join(v.name for v in enum.values)}"
    if isinstance(value, int):
        if value in enum.values_by_number:
            return value, None
        return value, f"{value} is not a value of {enum.name}"
    if isinstance(value, str):
        if value in enum.values_by_name:
            return value, None
        values = [v.name for v in enum.values]
        # The common prefix of all values (`GENERATION_KIND_`): accept `VIDEO` for `GENERATION_KIND_VIDEO`.
        prefix = enum_prefix(enum)
        full = prefix + value.upper()
        if full in enum.values_by_name:
            return full, None
        choices = ", ".join(v[len(prefix) :] for v in values if not v.endswith("_UNSPECIFIED"))
        return value, f"{value!r} is not one of {choices}"
    return value, f"expected one of {', '.join(v.name for v in enum.values)}"


def _check_scalar(field: FieldDescriptor, value: Any) -> str | None:
    if field.type in _INT_TYPES:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _is_int(value))):
            return f"expected an integer, got {value!r}"
    elif field.type in _FLOAT_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {value!r}"
    elif field.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            return f"expected true or false, got {value!r}"
    elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES) and not isinstance(value, str):
        return f"expected a string, got {value!r}"
    return None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def check_message(data: Any, descriptor: Descriptor, path: str = "") -> tuple[Any, list[Violation]]:
    """Return the data (enum short names expanded) and every violation found, each with its field path."""
    where = path or "(document)"
    if descriptor.full_name in _WELL_KNOWN:
        try:
            json_format.ParseDict(data, _message_class(descriptor)())
        except (json_format.ParseError, TypeError, ValueError) as exc:
            return data, [Violation(where, f"not a valid {descriptor.name}: {exc}")]
        return data, []
    if not isinstance(data, dict):
        return data, [Violation(where, f"expected a mapping of {descriptor.name} fields, got {type(data).__name__}")]
    violations: list[Violation] = []
    result: dict[str, Any] = {}
    seen_oneofs: dict[str, str] = {}
    for key, value in data.items():
        field_path = f"{path}.{key}" if path else str(key)
        field = _field_by_key(descriptor, str(key))
        if field is None:
            names = [f.name for f in descriptor.fields]
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f', did you mean "{close[0]}"?' if close else f" (fields: {', '.join(names)})"
            violations.append(Violation(field_path, f"unknown field{hint}"))
            continue
        oneof = field.containing_oneof
        if oneof is not None and value is not None:
            if oneof.name in seen_oneofs:
                violations.append(
                    Violation(field_path, f"only one of {oneof.name} may be set (also got {seen_oneofs[oneof.name]})")
                )
            seen_oneofs[oneof.name] = field.name
        result[field.name], found = _check_field(field, value, field_path)
        violations.extend(found)
    return result, violations


def _check_field(field: FieldDescriptor, value: Any, path: str) -> tuple[Any, list[Violation]]:
    if value is None:
        return value, []
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            return value, [Violation(path, "expected a mapping")]
        value_field = field.message_type.fields_by_name["value"]
        checked_map: dict[str, Any] = {}
        violations: list[Violation] = []
        for key, item in value.items():
            checked_map[key], found = _check_single(value_field, item, f"{path}.{key}")
            violations.extend(found)
        return checked_map, violations
    if field.is_repeated:
        if not isinstance(value, list):
            return value, [Violation(path, f"expected a list, got {type(value).__name__}")]
        items: list[Any] = []
        violations = []
        for index, item in enumerate(value):
            checked, found = _check_single(field, item, f"{path}[{index}]")
            items.append(checked)
            violations.extend(found)
        return items, violations
    return _check_single(field, value, path)


def _check_single(field: FieldDescriptor, value: Any, path: str) -> tuple[Any, list[Violation]]:
    if field.message_type is not None:
        return check_message(value, field.message_type, path)
    if field.enum_type is not None:
        normalised, error = _enum_value(field.enum_type, value)
        return normalised, [Violation(path, error)] if error else []
    error = _check_scalar(field, value)
    return value, [Violation(path, error)] if error else []


def _message_class(descriptor: Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def parse_message(data: Any, message_type: type[MessageT], *, source: str) -> MessageT:
    """Check then parse `data` into `message_type`; all violations are reported at once (exit code 3)."""
    checked, violations = check_message(data, message_type.DESCRIPTOR)  # type: ignore[arg-type]
    if violations:
        raise CliError(f"{source} is not a valid {message_type.DESCRIPTOR.name}", EXIT_INVALID, violations)
    message = message_type()
    try:
        json_format.ParseDict(checked, message)
    except json_format.ParseError as exc:  # something the walk above does not model (e.g. int64 range)
        raise CliError(f"{source} is not a valid {message_type.DESCRIPTOR.name}: {exc}", EXIT_INVALID) from None
    return message


def connection_references(data: Any) -> Iterator[tuple[list[Any], int, str]]:
    """Yield (list, index, platform) for every `@platform` entry under `post_to_platform.connections`."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("post_to_platform", "postToPlatform") and isinstance(value, dict):
                connections = value.get("connections")
                if isinstance(connections, list):
                    for index, entry in enumerate(connections):
                        if isinstance(entry, str) and entry.startswith("@"):
                            yield connections, index, entry[1:]
            yield from connection_references(value)
    elif isinstance(data, list):
        for item in data:
            yield from connection_references(item)
