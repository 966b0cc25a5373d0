"""Checks every request passes before any servicer sees it: the bytes parse, no text holds a NUL, and JSON
values (`google.protobuf.Struct`/`Value`) hold only finite numbers.

Both are protocol-level rules, not business rules: a request whose bytes do not parse (truncated, invalid
UTF-8 in a string, a varint where a string is declared) is the caller's fault whatever the RPC, and no text
field of any service may carry U+0000 (PostgreSQL `text`/`jsonb` cannot store it, SQLite would store what
PostgreSQL refuses, and platform APIs truncate at it). Checking here, once, keeps every service and every
future field covered without each decode step remembering it. A Struct is JSON, which has no NaN or Infinity:
protobuf's own JSON conversion refuses them, so they are refused here, by field path, before a servicer reads one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from contentpipe.common.errors import FieldViolation, InvalidArgument
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

NUL = "\x00"
_NUL_DESCRIPTION = "must not contain NUL (U+0000) characters"
_NON_FINITE_DESCRIPTION = "must be a finite number: a JSON value has no NaN or Infinity"
_JSON_VALUE = "google.protobuf.Value"
# Bound the report: one violation names the problem; thousands would only inflate the trailer.
_MAX_VIOLATIONS = 20


class UndecodableRequest:
    """Stands in for a request whose bytes did not parse, so the failure reaches our error mapping.

    grpc answers UNKNOWN when a request deserializer raises; returning this instead lets the handler
    chain (authentication first) run and then refuse the call as INVALID_ARGUMENT.
    """

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def tolerant_deserializer(
    deserializer: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    """`deserializer` returning an `UndecodableRequest` instead of raising on bytes that do not parse."""
    if deserializer is None or getattr(deserializer, "_contentpipe_tolerant", False):
        return deserializer
    owner = getattr(deserializer, "__self__", None)  # generated handlers pass `RequestClass.FromString`
    descriptor = getattr(owner, "DESCRIPTOR", None)
    type_name = str(getattr(descriptor, "full_name", "") or "request")

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, and whatever a custom deserializer raises on bad input
            return UndecodableRequest(type_name)

    deserialize._contentpipe_tolerant = True  # type: ignore[attr-defined]
    return deserialize


def check_request(request: Any) -> None:
    """Raise InvalidArgument for an undecodable request or any text field (at any depth) holding a NUL."""
    if isinstance(request, UndecodableRequest):
        raise InvalidArgument(
            f"the request body is not a valid {request.type_name} message", reason="MALFORMED_REQUEST"
        )
    if isinstance(request, Message):
        violations = field_violations(request)
        if violations:
            first = violations[0]
            reason = "NUL_IN_TEXT" if first.description == _NUL_DESCRIPTION else "NON_FINITE_NUMBER"
            raise InvalidArgument(f"{first.field}: {first.description}", violations, reason=reason)


def field_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """One FieldViolation per text field (or map key) of `message` that contains a NUL and per JSON number that is
    NaN or infinite, by dotted path."""
    violations: list[FieldViolation] = []
    for path, description in _bad_paths(message, prefix):
        violations.append(FieldViolation(path, description))
        if len(violations) >= _MAX_VIOLATIONS:
            break
    return violations


def _bad_paths(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for key in value:
                item_path = f"{path}[{key!r}]"
                if key_field.type == FieldDescriptor.TYPE_STRING and NUL in key:
                    yield item_path, _NUL_DESCRIPTION
                yield from _value_paths(value_field, value[key], item_path)
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _value_paths(field, item, f"{path}[{index}]")
        else:
            yield from _value_paths(field, value, path)


def _value_paths(field: FieldDescriptor, value: Any, path: str) -> Iterator[tuple[str, str]]:
    if field.type == FieldDescriptor.TYPE_STRING:
        if NUL in value:
            yield path, _NUL_DESCRIPTION
    elif field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        yield from _bad_paths(value, f"{path}.")
    elif (
        field.type == FieldDescriptor.TYPE_DOUBLE
        and field.containing_type is not None
        and field.containing_type.full_name == _JSON_VALUE
        and not math.isfinite(value)
    ):
        yield path, _NON_FINITE_DESCRIPTION


def optional_seconds(message: Message, field: str) -> float | None:
    """A `google.protobuf.Duration` field in seconds, None when unset; negative → INVALID_ARGUMENT on `field`."""
    if not message.HasField(field):
        return None
    try:
        seconds: float = getattr(message, field).ToTimedelta().total_seconds()
    except (OverflowError, ValueError):  # beyond what a duration can hold (or nanos out of range)
        raise InvalidArgument.single(field, "is not a valid duration (at most 10,000 years)") from None
    if seconds < 0:
        raise InvalidArgument.single(field, f"must not be negative, got {seconds:g}s")
    return seconds
