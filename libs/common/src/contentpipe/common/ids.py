"""Identifiers: time-ordered ids and AIP resource-name parsing."""

from __future__ import annotations

import os
import re
import time

from contentpipe.common.errors import InvalidArgument

_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def new_id() -> str:
    """A UUIDv7-layout id as 32 lowercase hex chars: sorts by creation time (ms), 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return f"{value:032x}"


def is_id(value: str) -> bool:
    return bool(_ID_PATTERN.match(value))


def format_name(pattern: str, *ids: str) -> str:
    """`format_name("pipelines/{id}/runs/{id}", p, r)` → `pipelines/p/runs/r`."""
    parts = pattern.split("{id}")
    if len(parts) - 1 != len(ids):
        raise ValueError(f"pattern {pattern!r} needs {len(parts) - 1} ids, got {len(ids)}")
    out = parts[0]
    for value, tail in zip(ids, parts[1:], strict=True):
        out += value + tail
    return out


def parse_name_parts(pattern: str, name: str, *, field: str = "name") -> tuple[str, ...]:
    """All `{id}` segments of `name` matching `pattern`; InvalidArgument on `field` otherwise."""
    expected = pattern.split("/")
    actual = name.split("/")
    if not name:
        raise InvalidArgument.single(field, f"required; expected {pattern}")
    if len(expected) != len(actual):
        raise InvalidArgument.single(field, f"expected {pattern}, got {name!r}")
    ids: list[str] = []
    for want, got in zip(expected, actual, strict=True):
        if want == "{id}":
            if not _SEGMENT.match(got):
                raise InvalidArgument.single(field, f"expected {pattern}, got {name!r}")
            ids.append(got)
        elif want != got:
            raise InvalidArgument.single(field, f"expected {pattern}, got {name!r}")
    return tuple(ids)


def parse_name(pattern: str, name: str, *, field: str = "name") -> str:
    """The last `{id}` of a resource name: `parse_name("generations/{id}", "generations/abc")` → `abc`."""
    return parse_name_parts(pattern, name, field=field)[-1]
