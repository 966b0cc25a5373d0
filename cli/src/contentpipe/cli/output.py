"""Rendering of responses: `table` for people, `json`/`yaml` (proto field names) for programs and round trips."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import yaml  # type: ignore[import-untyped]
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "yaml", "name")


def to_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping with proto field names: what `pipelines create -f` reads back."""
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return result


def names(data: Any) -> list[str]:
    """The resource names in a response (`-o name`): its own, or those of the items it lists."""
    if isinstance(data, dict):
        if isinstance(data.get("name"), str):
            return [data["name"]]
        return [name for value in data.values() if isinstance(value, list) for name in names(value)]
    if isinstance(data, list):
        return [name for item in data for name in names(item)]
    return []


def dump(data: Any, fmt: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    if fmt == "name":
        for name in names(data):
            out.write(name + "\n")
    elif fmt == "json":
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120))


def short_enum(value: str, prefix: str) -> str:
    """`PIPELINE_RUN_STATE_RUNNING` -> `RUNNING` for tables."""
    return value[len(prefix) :] if value.startswith(prefix) else value


def console(stream: TextIO | None = None) -> Console:
    out = stream or sys.stdout
    # Colourless and unwrapped when piped: one row per line in logs, scripts and tests.
    if out.isatty():
        return Console(file=out)
    return Console(file=out, width=1000, no_color=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    value: Callable[[dict[str, Any]], Any]


def col(title: str, path: str, *, enum_prefix: str = "", default: str = "") -> Column:
    """A column reading a dotted path of the JSON dict, shortening enum names by `enum_prefix`."""

    def read(item: dict[str, Any]) -> Any:
        value: Any = item
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return default
            value = value[part]
        if isinstance(value, str) and enum_prefix:
            return short_enum(value, enum_prefix)
        return value

    return Column(title, read)


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[Column], stream: TextIO | None = None) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column.title, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(column.value(row)) for column in columns))
    console(stream).print(table)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """`{"a": {"b": [1]}}` -> `[("a.b[0]", "1")]`: a generic key/value view of one resource."""
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            rows.extend(flatten(value, f"{prefix}.{key}" if prefix else key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            rows.extend(flatten(value, f"{prefix}[{index}]"))
    else:
        rows.append((prefix, str(data)))
    return rows


def print_resource(message: Message, fmt: str, stream: TextIO | None = None) -> None:
    data = to_dict(message)
    if fmt != "table":
        dump(data, fmt, stream)
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in flatten(data):
        table.add_row(key, value)
    console(stream).print(table)


def print_list(
    response: Message,
    items_field: str,
    columns: Sequence[Column],
    fmt: str,
    stream: TextIO | None = None,
) -> None:
    data = to_dict(response)
    if fmt != "table":
        dump(data, fmt, stream)
        return
    items = data.get(items_field, [])
    if not items:
        console(stream).print(f"no {items_field.replace('_', ' ')}")
    else:
        print_table(items, columns, stream)
    token = data.get("next_page_token")
    if token:
        print(f"more: --page-token {token}", file=sys.stderr)
