"""Hypothesis strategies that build any request message from its descriptor, biased towards hostile values."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from contentpipe.common.ids import new_id
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

COLLECTIONS = ("generations", "connections", "posts", "pipelines", "jobs", "notifications")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
MAX_DEPTH = 3

HOSTILE_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202e\u0000\ufeff",
    "' OR '1'='1' --",
    "%s%s%s%n",
    "{{7*7}}",
    "../../../../etc/passwd",
    "😀" * 50,
    "\ud7ff\ue000",
    "a" * 70_000,
    "é" * 300_000,
]

text = st.one_of(st.text(max_size=40), st.sampled_from(HOSTILE_TEXT))

resource_ids = st.one_of(
    st.builds(new_id),
    st.text(max_size=40),
    st.sampled_from(["", "-", "..", "%2F", "0" * 32, "x" * 10_000, "a/b", "\x00", " "]),
)


@st.composite
def resource_names(draw: st.DrawFn) -> str:
    collection = draw(st.sampled_from(COLLECTIONS))
    shape = draw(st.integers(0, 5))
    ident = draw(resource_ids)
    if shape == 0:
        return f"{collection}/{ident}"
    if shape == 1:
        return f"pipelines/{ident}/runs/{draw(resource_ids)}"
    if shape == 2:
        return f"{collection}/{ident}/{draw(text)}"
    if shape == 3:
        return f"{collection}s/{ident}"  # wrong collection
    if shape == 4:
        return draw(st.sampled_from(["pipelines/-", "pipelines/-/runs/-", "jobs/-", "/", "//", collection]))
    return draw(text)


@st.composite
def page_tokens(draw: st.DrawFn) -> str:
    shape = draw(st.integers(0, 4))
    if shape == 0:
        return draw(text)
    if shape == 1:
        return base64.urlsafe_b64encode(draw(st.binary(max_size=200))).decode()
    if shape == 2:
        payload = json.dumps({"create_time": draw(st.integers(*INT64)), "id": draw(resource_ids)}).encode()
        return base64.urlsafe_b64encode(payload).decode().rstrip("=")
    if shape == 3:
        return base64.urlsafe_b64encode(b'{"p": ' + draw(st.binary(max_size=50)) + b"}").decode() + "." + "A" * 43
    return "A" * draw(st.integers(1, 20_000))


urls = st.one_of(
    st.sampled_from(
        [
            "http://127.0.0.1:1/x",
            "http://localhost/",
            "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.0.0.1/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "https://metadata.google.internal/computeMetadata/v1/",
            "file:///etc/passwd",
            "gopher://127.0.0.1:6379/_FLUSHALL",
            "ftp://example.com/",
            "data:image/png;base64,AAAA",
            "http://example.com:99999/",
            "http://[not-an-ip]/",
            "https://user:pass@example.invalid/a.png",
            "javascript:alert(1)",
            "http://" + "a" * 300 + ".example/",
            "generations/does-not-exist/outputs/0",
        ]
    ),
    text,
)

cron_expressions = st.one_of(
    st.sampled_from(
        [
            "* * * * *",
            "0 0 31 2 *",
            "0 0 30 2 *",
            "*/0 * * * *",
            "60 24 32 13 8",
            "* * * * * * *",
            "@yearly",
            "@reboot",
            "0 0 29 2 1",
            "59 23 31 12 *",
            "-1 * * * *",
            "1-0 * * * *",
            "*/1000000000000 * * * *",
        ]
    ),
    text,
)

time_zones = st.one_of(
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Mars/Olympus", "../../etc/localtime", "", "+25:00"]),
    text,
)

int32s = st.one_of(st.integers(*INT32), st.sampled_from([INT32[0], -1, 0, 1, 1000, 1001, INT32[1]]))
int64s = st.one_of(st.integers(*INT64), st.sampled_from([INT64[0], -1, 0, 1, INT64[1]]))
uint32s = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 2**32 - 1]))
uint64s = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**64 - 1]))
doubles = st.one_of(st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308, -1e-308]))
floats32 = st.one_of(st.floats(width=32), st.sampled_from([math.nan, math.inf, -math.inf, -1.0]))

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)


def string_strategy(field: FieldDescriptor) -> st.SearchStrategy[str]:
    name = field.name
    if name in ("name", "parent", "pipeline", "job", "connection", "connections", "resumed_run", "generation"):
        return st.one_of(resource_names(), text)
    if name in ("pipeline_run", "media_step_id", "step_id"):
        return st.one_of(resource_names(), text)
    if (
        name in ("page_token", "next_page_token", "state")
        and field.containing_type is not None
        and field.containing_type.name.endswith("Request")
    ):
        return page_tokens()
    if name.endswith(("uri", "url")):
        return urls
    if name == "expression":
        return cron_expressions
    if name == "time_zone":
        return time_zones
    return text


def scalar_strategy(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return string_strategy(field)
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.just(b"\xff\xfe\xfd"), st.just(b"\x00" * 100_000))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return int32s
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return int64s
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return uint32s
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return uint64s
    if t == FieldDescriptor.TYPE_DOUBLE:
        return doubles
    if t == FieldDescriptor.TYPE_FLOAT:
        return floats32
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        # Unknown numbers too: proto3 enums are open, so a client may send any int32.
        return st.one_of(st.sampled_from(known), st.integers(-5, 50), st.sampled_from([INT32[0], INT32[1]]))
    raise AssertionError(f"unhandled field type {t} of {field.full_name}")


def _fill_well_known(draw: st.DrawFn, message: Message, descriptor: Descriptor) -> bool:
    full = descriptor.full_name
    if full in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        # Out-of-range seconds/nanos are representable on the wire; servers must refuse them, not crash.
        message.seconds = draw(st.one_of(st.integers(-(10**11), 10**11), st.sampled_from([INT64[0], INT64[1], 0])))  # type: ignore[attr-defined]
        message.nanos = draw(st.one_of(st.integers(0, 999_999_999), st.sampled_from([INT32[0], -1, 10**9, INT32[1]])))  # type: ignore[attr-defined]
        return True
    if full == "google.protobuf.FieldMask":
        paths = st.one_of(
            st.sampled_from(["*", "name", "owner", "etag", "state", "steps", "display_name", "cron", "x.y.z", ""]),
            text,
        )
        message.paths.extend(draw(st.lists(paths, max_size=4)))  # type: ignore[attr-defined]
        return True
    if full == "google.protobuf.Struct":
        message.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=4)))  # type: ignore[attr-defined]
        return True
    return False


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    fill(draw, message, descriptor, depth)
    return message


def fill(draw: st.DrawFn, message: Message, descriptor: Descriptor, depth: int) -> None:
    if _fill_well_known(draw, message, descriptor):
        return
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                continue
            entries = draw(st.dictionaries(scalar_strategy(key_field), scalar_strategy(value_field), max_size=3))
            getattr(message, field.name).update(entries)
            continue
        if field.message_type is not None:
            if depth >= MAX_DEPTH:
                continue
            if field.is_repeated:
                count = draw(st.integers(0, 3))
                container = getattr(message, field.name)
                for _ in range(count):
                    fill(draw, container.add(), field.message_type, depth + 1)
            else:
                fill(draw, getattr(message, field.name), field.message_type, depth + 1)
                # Presence matters even when every subfield stayed at its default.
                getattr(message, field.name).SetInParent()
            continue
        if field.is_repeated:
            size = draw(st.sampled_from([0, 1, 2, 3, 25]))
            getattr(message, field.name).extend(draw(st.lists(scalar_strategy(field), min_size=size, max_size=size)))
        else:
            setattr(message, field.name, draw(scalar_strategy(field)))


# ------------------------------------------------------------------------------------------- mutation of valid seeds

# Text that is valid protobuf but that databases and parsers choke on: NUL (PostgreSQL text cannot hold it),
# lone surrogates are impossible in proto strings, so: NUL, control characters, huge, RTL overrides.
MUTANT_TEXT = st.one_of(
    st.sampled_from(["\x00", "a\x00b", "\x00" * 3, "\x1b[31m", "\r\n\t", "\u202e", "x" * 100_000, ""]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30).map(lambda t: t + "\x00"),
    text,
)


def leaf_paths(descriptor: Descriptor, prefix: tuple[str, ...] = (), depth: int = 0) -> list[tuple[str, ...]]:
    """Every scalar or well-known-message field reachable from `descriptor` (3 levels), as attribute paths."""
    paths: list[tuple[str, ...]] = []
    for f in descriptor.fields:
        path = (*prefix, f.name)
        if f.message_type is None or f.message_type.full_name.startswith("google.protobuf."):
            paths.append(path)
        elif depth < 3 and not f.message_type.GetOptions().map_entry:
            paths.extend(leaf_paths(f.message_type, path, depth + 1))
    return paths


def _descend(message: Message, path: tuple[str, ...]) -> tuple[Message, FieldDescriptor] | None:
    target: Any = message
    for part in path[:-1]:
        child = getattr(target, part)
        repeated = hasattr(child, "add")
        target = (child[0] if len(child) else child.add()) if repeated else child
    field = target.DESCRIPTOR.fields_by_name[path[-1]]
    return target, field


@st.composite
def mutants(draw: st.DrawFn, seed: Message) -> Message:
    """`seed` (a valid request) with one to three of its fields replaced by hostile values."""
    message = type(seed)()
    message.CopyFrom(seed)
    paths = leaf_paths(message.DESCRIPTOR)  # type: ignore[arg-type]
    if not paths:  # an empty request (ListPlatforms): nothing to break
        return message
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True)):
        found = _descend(message, path)
        if found is None:
            continue
        target, field = found
        if field.message_type is not None:  # a well-known type: hostile contents
            if field.is_repeated:
                fill(draw, getattr(target, field.name).add(), field.message_type, 0)
            else:
                fill(draw, getattr(target, field.name), field.message_type, 0)
                getattr(target, field.name).SetInParent()
            continue
        values = MUTANT_TEXT if field.type == FieldDescriptor.TYPE_STRING else scalar_strategy(field)
        if field.is_repeated:
            getattr(target, field.name).extend(draw(st.lists(values, min_size=1, max_size=3)))
        else:
            setattr(target, field.name, draw(values))
    return message
