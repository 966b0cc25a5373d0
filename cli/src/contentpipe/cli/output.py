"""Rendering of responses: `table` for people, `json`/`yaml` (proto field names) for programs and round trips."""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml  # type: ignore[import-untyped]
from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.containers import Lines
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

FORMATS = ("table", "json", "yaml", "name")


def to_dict(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping with proto field names and short enum names (`SUCCEEDED`, as in the tables).

    `pipelines create -f` reads it back: manifests accept enum values without their type prefix.
    """
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _shorten_enums(result, message.DESCRIPTOR)
    return result


def enum_prefix(enum: EnumDescriptor) -> str:
    """The prefix every value of an AIP-style enum shares (`PIPELINE_RUN_STATE_`), from its `*_UNSPECIFIED` value."""
    first = enum.values[0].name if enum.values else ""
    return first.rsplit("UNSPECIFIED", 1)[0] if first.endswith("UNSPECIFIED") else ""


def _short_enum_value(field: FieldDescriptor, value: Any) -> Any:
    assert field.enum_type is not None
    return short_enum(value, enum_prefix(field.enum_type)) if isinstance(value, str) else value


def _shorten_enums(data: dict[str, Any], descriptor: Any) -> None:
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            continue
        if field.enum_type is not None:
            data[key] = (
                [_short_enum_value(field, v) for v in value]
                if isinstance(value, list)
                else (_short_enum_value(field, value))
            )
        elif field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.message_type is not None and isinstance(value, dict):
                    for item in value.values():
                        if isinstance(item, dict):
                            _shorten_enums(item, value_field.message_type)
                elif value_field.enum_type is not None and isinstance(value, dict):
                    for map_key, item in value.items():
                        value[map_key] = _short_enum_value(value_field, item)
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    _shorten_enums(item, field.message_type)


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


# Where a line may break: after a run of spaces or of slashes (paths and URLs break between their parts).
_PIECE = re.compile(r"[^\s/]*(?:/+|\s+)|[^\s/]+")


def wrap_points(text: str, width: int) -> list[int]:
    """Offsets at which to break `text` (one line) so that each part fits `width` cells.

    Breaks fall only after spaces or '/', never inside a word or a path segment; a piece longer than `width` is
    kept whole on a line of its own (copied from a terminal it is still one piece), never cut."""
    breaks: list[int] = []
    line_start, used = 0, 0
    for match in _PIECE.finditer(text):
        start, piece = match.start(), match.group()
        if used and used + cell_len(piece.rstrip()) > width:
            breaks.append(start)
            line_start, used = start, 0
        used += cell_len(piece)
        if used > width and start == line_start and match.end() < len(text):
            # A piece too long for any line: alone on its line, the next piece starts a new one.
            breaks.append(match.end())
            line_start, used = match.end(), 0
    return breaks


class WrappedText(Text):
    """Text that rich wraps with wrap_points instead of folding long words mid-word."""

    def wrap(
        self,
        console: Console,
        width: int,
        *,
        justify: Any = None,
        overflow: Any = None,
        tab_size: int = 8,
        no_wrap: bool | None = None,
    ) -> Lines:
        lines = Lines()
        for line in self.split(allow_blank=True):
            for part in line.divide(wrap_points(line.plain, width)):
                part.rstrip()
                lines.append(part)
        return lines

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        rows = self.plain.split("\n")
        widest = max(cell_len(row) for row in rows)
        piece = max((cell_len(m.group().rstrip()) for row in rows for m in _PIECE.finditer(row)), default=0)
        return Measurement(piece, widest)


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    value: Callable[[dict[str, Any]], Any]


def age(value: Any, now: datetime | None = None) -> str:
    """An RFC 3339 time as kubectl shows it: `45s`, `12m`, `3h5m`, `4d`; future times as `in 3h` (`-` if unset)."""
    if not isinstance(value, str) or not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    text = _span(abs(seconds))
    return f"in {text}" if seconds < 0 else text


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 24:
        rest = minutes % 60
        return f"{hours}h{rest}m" if hours < 10 and rest else f"{hours}h"
    days = hours // 24
    if days < 365:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"


def age_col(title: str, path: str) -> Column:
    """A time column shown as an age (`AGE`, `FINISHED`) or a countdown (`NEXT FIRE`), not a microsecond stamp."""
    read = col(title, path).value
    return Column(title, lambda item: age(read(item)))


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
        table.add_row(*(WrappedText(_cell(column.value(row))) for column in columns))
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
    out = console(stream)
    rows = flatten(data)
    key_width = max((cell_len(key) for key, _ in rows), default=0)
    # Laid out here rather than by a rich Table, which crops a piece wider than its column: a long path or
    # token stays whole (on a line of its own), the rest wraps between words and path segments.
    value_width = max(out.width - key_width - 2, 20)
    for key, value in rows:
        for number, part in enumerate(value.split("\n")):
            cuts = [0, *wrap_points(part, value_width), len(part)]
            for first, (start, end) in enumerate(itertools.pairwise(cuts)):
                label = key if number == 0 and first == 0 else ""
                line = Text.assemble((label.ljust(key_width), "bold"), "  ", part[start:end].rstrip())
                out.print(line, no_wrap=True, overflow="ignore", crop=False, soft_wrap=True)


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


def print_still_going(what: str, *, follow: str, cancel: str, stream: TextIO | None = None) -> None:
    """After Ctrl-C while waiting: the work goes on server-side; say how to come back to it or stop it."""
    out = stream or sys.stderr
    out.write(f"\nstopped watching; {what} goes on in the service.\n")
    out.write(f"  follow it again: {follow}\n  cancel it:       {cancel}\n")
    out.flush()
