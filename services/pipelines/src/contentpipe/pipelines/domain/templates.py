"""The template language of prompts and captions: `{{ path | filter }}` placeholders, no code execution.

See docs/templates.md. A template is parsed once into literal text and placeholders; a placeholder is a
path (`steps.<id>.assets[0].uri`, `run.trigger_date`, `pipeline.display_name`) followed by zero or more
filters from a fixed list. Nothing is evaluated beyond looking values up in a plain mapping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_TEMPLATE_LENGTH = 20_000
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INT = re.compile(r"-?[0-9]+")


class TemplateError(ValueError):
    """A template that cannot be parsed or rendered; `position` is a 0-based offset into the template."""

    def __init__(self, message: str, template: str, position: int) -> None:
        self.description = message
        self.position = position
        before = template[:position]
        self.line = before.count("\n") + 1
        self.column = position - (before.rfind("\n") + 1) + 1
        super().__init__(f"line {self.line}, column {self.column}: {message}")


@dataclass(frozen=True, slots=True)
class Segment:
    """One element of a path: a field name (`key`) or a list index (`index`)."""

    key: str | None = None
    index: int | None = None
    position: int = 0

    def __str__(self) -> str:
        return f"[{self.index}]" if self.key is None else self.key


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    argument: str | int | None
    position: int


@dataclass(frozen=True, slots=True)
class Placeholder:
    path: tuple[Segment, ...]
    filters: tuple[Filter, ...]
    position: int  # offset of `{{`

    @property
    def dotted(self) -> str:
        text = ""
        for segment in self.path:
            text += str(segment) if segment.key is None or not text else "." + str(segment)
        return text


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> tuple[Placeholder, ...]:
        return tuple(part for part in self.parts if isinstance(part, Placeholder))


# ---------------------------------------------------------------- filters


def _text(value: Any) -> str:
    return value if isinstance(value, str) else format_value(value)


def _truncate(value: Any, argument: str | int | None) -> str:
    text = _text(value)
    assert isinstance(argument, int)
    return text if len(text) <= argument else text[: max(argument - 1, 0)] + "…"


FILTERS: Mapping[str, tuple[str, Callable[[Any, str | int | None], Any]]] = {
    # name: (argument kind: "" none, "int", "str"; function)
    "upper": ("", lambda value, _arg: _text(value).upper()),
    "lower": ("", lambda value, _arg: _text(value).lower()),
    "trim": ("", lambda value, _arg: _text(value).strip()),
    "truncate": ("int", _truncate),
    "default": ("str", lambda value, arg: arg if value in (None, "", (), []) else value),
}


# ---------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, source: str, start: int, end: int) -> None:
        self.source = source
        self.pos = start
        self.end = end

    def skip_spaces(self) -> None:
        while self.pos < self.end and self.source[self.pos] in " \t\r\n":
            self.pos += 1

    def fail(self, message: str, position: int | None = None) -> TemplateError:
        return TemplateError(message, self.source, self.pos if position is None else position)

    def peek(self) -> str:
        return self.source[self.pos] if self.pos < self.end else ""

    def identifier(self, what: str) -> str:
        match = _IDENT.match(self.source, self.pos, self.end)
        if not match:
            found = self.peek() or "end of placeholder"
            raise self.fail(f"expected {what}, found {found!r}")
        self.pos = match.end()
        return match.group()

    def integer(self, what: str) -> int:
        match = _INT.match(self.source, self.pos, self.end)
        if not match:
            raise self.fail(f"expected {what}")
        self.pos = match.end()
        return int(match.group())

    def string(self) -> str:
        quote = self.peek()
        if quote not in ('"', "'"):
            raise self.fail("expected a quoted string")
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < self.end:
            char = self.source[self.pos]
            if char == "\\" and self.pos + 1 < self.end:
                out.append(self.source[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(out)
            out.append(char)
            self.pos += 1
        raise self.fail("unterminated string", start)

    def path(self) -> tuple[Segment, ...]:
        segments = [Segment(key=self.identifier("a name such as steps, run or pipeline"), position=self.pos)]
        while True:
            char = self.peek()
            if char == ".":
                self.pos += 1
                start = self.pos
                segments.append(Segment(key=self.identifier("a field name after '.'"), position=start))
            elif char == "[":
                start = self.pos
                self.pos += 1
                self.skip_spaces()
                index = self.integer("a list index")
                if index < 0:
                    raise self.fail("list indexes start at 0", start)
                self.skip_spaces()
                if self.peek() != "]":
                    raise self.fail("expected ']'")
                self.pos += 1
                segments.append(Segment(index=index, position=start))
            else:
                return tuple(segments)

    def filter(self) -> Filter:
        start = self.pos
        name = self.identifier("a filter name")
        if name not in FILTERS:
            raise self.fail(f"unknown filter {name!r} (known: {', '.join(sorted(FILTERS))})", start)
        kind, _ = FILTERS[name]
        self.skip_spaces()
        argument: str | int | None = None
        if kind:
            if self.peek() != "(":
                raise self.fail(f"filter {name!r} needs an argument in parentheses")
            self.pos += 1
            self.skip_spaces()
            argument = self.integer("a whole number") if kind == "int" else self.string()
            if kind == "int" and argument < 1:  # type: ignore[operator]
                raise self.fail(f"filter {name!r} needs a positive number", start)
            self.skip_spaces()
            if self.peek() != ")":
                raise self.fail("expected ')'")
            self.pos += 1
        elif self.peek() == "(":
            raise self.fail(f"filter {name!r} takes no argument")
        return Filter(name=name, argument=argument, position=start)

    def placeholder(self, opening: int) -> Placeholder:
        self.skip_spaces()
        if self.peek() in ('"', "'"):
            # A string literal, e.g. {{ "{{" }} to write the braces themselves.
            start = self.pos
            literal = self.string()
            path: tuple[Segment, ...] = (Segment(key="\0literal", position=start), Segment(key=literal))
        else:
            path = self.path()
        filters: list[Filter] = []
        self.skip_spaces()
        while self.peek() == "|":
            self.pos += 1
            self.skip_spaces()
            filters.append(self.filter())
            self.skip_spaces()
        if self.pos != self.end:
            raise self.fail(f"unexpected {self.peek()!r} in placeholder")
        return Placeholder(path=path, filters=tuple(filters), position=opening)


def parse(source: str) -> Template:
    """Parse `source`; raises TemplateError with the position of the first problem."""
    if len(source) > MAX_TEMPLATE_LENGTH:
        raise TemplateError(f"template is longer than {MAX_TEMPLATE_LENGTH} characters", source, MAX_TEMPLATE_LENGTH)
    parts: list[str | Placeholder] = []
    pos = 0
    while True:
        opening = source.find("{{", pos)
        closing_stray = source.find("}}", pos)
        if opening == -1:
            if closing_stray != -1:
                raise TemplateError("'}}' without a matching '{{'", source, closing_stray)
            if pos < len(source):
                parts.append(source[pos:])
            break
        if closing_stray != -1 and closing_stray < opening:
            raise TemplateError("'}}' without a matching '{{'", source, closing_stray)
        if opening > pos:
            parts.append(source[pos:opening])
        end = _closing(source, opening + 2)
        if end == -1:
            raise TemplateError("'{{' is never closed with '}}'", source, opening)
        parts.append(_Parser(source, opening + 2, end).placeholder(opening))
        pos = end + 2
    return Template(source=source, parts=tuple(parts))


def _closing(source: str, start: int) -> int:
    """Offset of the `}}` closing a placeholder, skipping quoted strings."""
    pos = start
    quote = ""
    while pos < len(source):
        char = source[pos]
        if quote:
            if char == "\\":
                pos += 2
                continue
            if char == quote:
                quote = ""
        elif char in ('"', "'"):
            quote = char
        elif source.startswith("}}", pos):
            return pos
        pos += 1
    return -1


# ---------------------------------------------------------------- static checks

# What each step kind produces, and what lies below each output.
STEP_OUTPUTS: Mapping[str, Mapping[str, str]] = {
    "generate_content": {"generation": "scalar", "assets": "assets", "text": "scalar"},
    "post_to_platform": {"posts": "list"},
    "schedule_pipeline": {"job": "scalar", "next_run_time": "scalar"},
}
ASSET_FIELDS = frozenset(
    {
        "uri",
        "content_type",
        "size_bytes",
        "sha256",
        "width",
        "height",
        "duration_seconds",
        "frame_count",
        "fps",
        "storage_key",
        "expire_time",
    }
)
RUN_FIELDS = frozenset({"id", "name", "trigger_time", "trigger_date", "trigger_kind", "nominal_time", "job"})
PIPELINE_FIELDS = frozenset({"id", "name", "display_name", "revision"})


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What a template may know about an earlier step: its kind and, for generations, the generation kind."""

    kind: str
    generation_kind: str = ""


def check_references(
    template: Template,
    earlier_steps: Mapping[str, StepInfo],
    *,
    later_steps: Sequence[str] = (),
) -> list[TemplateError]:
    """Every placeholder must name a field that exists before this step runs; returns the problems found."""
    problems: list[TemplateError] = []
    for placeholder in template.placeholders:
        problem = _check_path(template.source, placeholder, earlier_steps, later_steps)
        if problem is not None:
            problems.append(problem)
    return problems


def _check_path(
    source: str,
    placeholder: Placeholder,
    earlier: Mapping[str, StepInfo],
    later: Sequence[str],
) -> TemplateError | None:
    path = placeholder.path
    root = path[0]

    def fail(message: str, segment: Segment) -> TemplateError:
        return TemplateError(message, source, segment.position)

    def no_more(after: int, what: str) -> TemplateError | None:
        if len(path) > after:
            return fail(f"{what} has no field {str(path[after])!r}", path[after])
        return None

    if root.key == "\0literal":
        return None
    if root.key in ("run", "pipeline"):
        fields = RUN_FIELDS if root.key == "run" else PIPELINE_FIELDS
        if len(path) < 2 or path[1].key not in fields:
            segment = path[1] if len(path) > 1 else root
            return fail(f"'{root.key}' has the fields {', '.join(sorted(fields))}", segment)
        return no_more(2, f"{root.key}.{path[1].key}")
    if root.key != "steps":
        return fail(f"unknown name {root.key!r}: use steps.<id>, run or pipeline", root)
    if len(path) < 2 or path[1].key is None:
        return fail("expected a step id after 'steps.'", path[1] if len(path) > 1 else root)
    step_id = path[1].key
    if step_id not in earlier:
        if step_id in later:
            return fail(f"step {step_id!r} runs after this one; only earlier steps can be referenced", path[1])
        return fail(f"no earlier step with id {step_id!r}", path[1])
    info = earlier[step_id]
    produced = STEP_OUTPUTS.get(info.kind, {})
    if len(path) < 3 or path[2].key is None:
        return fail(
            f"name an output of step {step_id!r}: {', '.join(sorted(produced))}",
            path[2] if len(path) > 2 else path[1],
        )
    output = path[2].key
    if output not in produced:
        return fail(
            f"a {info.kind} step produces {', '.join(sorted(produced))}, not {output!r}",
            path[2],
        )
    if output == "text" and info.generation_kind and info.generation_kind != "TEXT":
        return fail(f"step {step_id!r} generates {info.generation_kind.lower()}, which has no text", path[2])
    shape = produced[output]
    if shape == "scalar":
        return no_more(3, f"steps.{step_id}.{output}")
    if shape == "list":
        if len(path) > 3 and path[3].index is None:
            return fail(f"steps.{step_id}.{output} is a list: index it, e.g. [0]", path[3])
        return no_more(4, f"steps.{step_id}.{output}[i]")
    # assets: a list of records; a whole asset cannot be printed.
    if len(path) < 4 or path[3].index is None:
        return fail(
            f"steps.{step_id}.assets is a list of assets: pick one and a field, e.g. assets[0].uri",
            path[3] if len(path) > 3 else path[2],
        )
    if len(path) < 5 or path[4].key not in ASSET_FIELDS:
        return fail(
            f"an asset has the fields {', '.join(sorted(ASSET_FIELDS))}",
            path[4] if len(path) > 4 else path[3],
        )
    return no_more(5, f"steps.{step_id}.assets[i].{path[4].key}")


# ---------------------------------------------------------------- rendering


def format_value(value: Any) -> str:
    """How a looked-up value is written into the text."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(format_value(item) for item in value)
    if isinstance(value, Mapping):
        raise TypeError("a record cannot be written as text")
    return str(value)


def render(template: Template, context: Mapping[str, Any]) -> str:
    """Fill the placeholders from `context` (nested mappings and lists); TemplateError on a missing value."""
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = _lookup(template.source, part, context)
        for applied in part.filters:
            value = FILTERS[applied.name][1](value, applied.argument)
        try:
            out.append(format_value(value))
        except TypeError:
            raise TemplateError(
                f"{part.dotted} is a record: pick one of its fields", template.source, part.position
            ) from None
    return "".join(out)


def _lookup(source: str, placeholder: Placeholder, context: Mapping[str, Any]) -> Any:
    path = placeholder.path
    if path[0].key == "\0literal":
        return path[1].key
    value: Any = context
    walked = ""
    for segment in path:
        if segment.key is not None:
            if not isinstance(value, Mapping) or segment.key not in value:
                has_default = any(f.name == "default" for f in placeholder.filters)
                if has_default and walked:
                    return None
                raise TemplateError(f"{walked or 'the context'} has no {segment.key!r}", source, segment.position)
            value = value[segment.key]
            walked = f"{walked}.{segment.key}" if walked else segment.key
        else:
            assert segment.index is not None
            if not isinstance(value, list | tuple) or segment.index >= len(value):
                size = len(value) if isinstance(value, list | tuple) else 0
                raise TemplateError(
                    f"{walked} has {size} item(s); index {segment.index} is out of range", source, segment.position
                )
            value = value[segment.index]
            walked = f"{walked}[{segment.index}]"
    return value


def render_text(source: str, context: Mapping[str, Any]) -> str:
    return render(parse(source), context)
