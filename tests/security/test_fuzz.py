"""Fuzzed requests for every RPC of every service: documented codes with a message, never UNKNOWN/INTERNAL.

Requests are built from the generated descriptors, so an RPC added to a proto is fuzzed without touching this
file. `FUZZ_EXAMPLES` (per RPC and database backend) scales the run; CI keeps the default.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.security.catalog import Rpc, all_rpcs
from tests.security.stack import Stack, service_metadata, user_metadata
from tests.security.strategies import _descend, leaf_paths, messages, mutants
from tests.security.tenants import World, build_world, collection_of, slots

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CALL_TIMEOUT = 5.0
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
RPCS = all_rpcs()
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("CI", "").lower() == "true",
    phases=[Phase.explicit, Phase.generate],  # failures are collected below, smallest first, not shrunk
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Failure:
    rpc: str
    code: str
    details: str
    request: str
    size: int

    cause: str = ""

    def __str__(self) -> str:
        request = self.request if len(self.request) < 1500 else self.request[:1500] + "…"
        cause = f"\n    server log: {self.cause}" if self.cause else ""
        return f"{self.rpc} → {self.code} {self.details!r}\n    request: {request}{cause}"


def _describe(request: Message | bytes) -> tuple[str, int]:
    if isinstance(request, bytes):
        return f"raw wire bytes {request[:200]!r}", len(request)
    return text_format.MessageToString(request, as_one_line=True), request.ByteSize()


def send(stack: Stack, rpc: Rpc, request: Message | bytes, metadata: tuple[tuple[str, str], ...]) -> Failure | None:
    """Send one request; a Failure when the answer is undocumented or has no message."""
    stub = rpc.callable(stack.channel(rpc.process), raw=isinstance(request, bytes))
    try:
        stub(request, metadata=metadata, timeout=CALL_TIMEOUT)
        return None
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
        stack.observe(details)
    if code in ALLOWED and details.strip():
        return None
    text, size = _describe(request)
    return Failure(rpc.id, code.name, details, text, size, cause=_logged_cause(stack, details))


def _logged_cause(stack: Stack, details: str) -> str:
    """For INTERNAL answers, the last line of the traceback the service logged under the same request id."""
    match = re.search(r"request id ([0-9a-f]+)", details)
    if match is None:
        return ""
    for line in stack.logs().splitlines():
        if match.group(1) in line and '"exc"' in line:
            try:
                exc = str(json.loads(line).get("exc", ""))
            except ValueError:
                continue
            lines = exc.strip().splitlines()
            frames = [ln.strip() for ln in lines if ln.strip().startswith('File "') and "/contentpipe/" in ln]
            messages = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b", ln)]
            return " | ".join([*frames[-2:], (messages or lines)[-1][:300]])
    return ""


def report(failures: list[Failure]) -> str:
    """The smallest failing request per (rpc, code), so the report names exact reproducible requests."""
    smallest: dict[tuple[str, str], Failure] = {}
    for failure in failures:
        key = (failure.rpc, failure.code)
        if key not in smallest or failure.size < smallest[key].size:
            smallest[key] = failure
    return "\n".join(str(f) for f in sorted(smallest.values(), key=lambda f: (f.rpc, f.code)))


def assert_healthy(stack: Stack) -> None:
    for _ in range(50):
        health = stack.healthy()
        if all(health.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"services unhealthy after fuzzing: {health}\n{stack.logs()[-4000:]}")


@pytest.fixture(scope="session")
def fuzz_world(stack: Stack) -> World:
    """Valid requests and real resource names of one user: the seeds mutation starts from."""
    return build_world(stack, "fuzz-seed-user", user_metadata("fuzz-seed-user"))


def seeds_for(rpc: Rpc, world: World) -> list[Message]:
    """Valid requests for `rpc`: the world's own request, or the request naming each of the user's resources."""
    if rpc.method.name in world.requests:
        return [world.requests[rpc.method.name]]
    seeds: list[Message] = []
    for slot in slots(rpc):
        if not slot.is_target or len(slot.path) != 1:
            continue
        for name in world.names.values():
            if collection_of(name) == slot.collection or (slot.path[0] == "parent" and name.startswith("pipelines/")):
                request = rpc.request_class()()
                setattr(request, slot.path[0], name)
                seeds.append(request)
    return seeds or [rpc.request_class()()]


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.id for rpc in RPCS])
def test_mutated_valid_requests_get_documented_answers(stack: Stack, fuzz_world: World, rpc: Rpc) -> None:
    """Start from a request the service accepts and break one to three fields: reaches the deep code paths."""
    failures: list[Failure] = []
    user = user_metadata(fuzz_world.user)
    seeds = seeds_for(rpc, fuzz_world)

    @FUZZ_SETTINGS
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        seed = data.draw(st.sampled_from(seeds))
        request = data.draw(mutants(seed))
        if "request_id" in rpc.input.fields_by_name and data.draw(st.booleans()):
            request.request_id = str(uuid.uuid4())  # type: ignore[attr-defined]  # mostly new calls, some replays
        failure = send(stack, rpc, request, user)
        if failure is not None:
            failures.append(failure)

    fuzz()
    assert_healthy(stack)
    assert not failures, f"{len(failures)} undocumented answers; smallest per code:\n{report(failures)}"


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.id for rpc in RPCS])
def test_fuzzed_requests_get_documented_answers(stack: Stack, rpc: Rpc) -> None:
    failures: list[Failure] = []
    user = user_metadata("fuzz-user")
    acting = service_metadata("fuzz-user")

    @FUZZ_SETTINGS
    @given(request=messages(rpc.input), as_service=st.booleans())
    def fuzz(request: Message, as_service: bool) -> None:
        failure = send(stack, rpc, request, acting if as_service else user)
        if failure is not None:
            failures.append(failure)

    fuzz()
    assert_healthy(stack)
    assert not failures, f"{len(failures)} undocumented answers; smallest per code:\n{report(failures)}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _first_string_field(rpc: Rpc) -> FieldDescriptor | None:
    for field in rpc.input.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            return field
    return None


def malformed_payloads(rpc: Rpc) -> list[bytes]:
    """Bytes no client library would produce: invalid UTF-8 in a string field, truncation, garbage, wrong types."""
    payloads = [b"\x0a\x64abc", b"\xff\xff\xff\xff", b"\x08"]  # truncated length, bad tag, truncated varint
    field = _first_string_field(rpc)
    if field is not None:
        tag = _varint(field.number << 3 | 2)
        payloads += [tag + _varint(len(bad)) + bad for bad in (b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80")]
        payloads.append(_varint(field.number << 3 | 0) + b"\x01")  # a varint where a string is declared
    return payloads


def test_malformed_wire_bytes_are_invalid_argument_not_unknown(stack: Stack) -> None:
    """One test for all RPCs: decoding happens in the runtime, before any servicer."""
    failures = [
        failure
        for rpc in RPCS
        for payload in malformed_payloads(rpc)
        if (failure := send(stack, rpc, payload, user_metadata("fuzz-user"))) is not None
    ]
    assert_healthy(stack)
    assert not failures, f"{len(failures)} undocumented answers; smallest per code:\n{report(failures)}"


def test_nul_in_any_text_field_of_a_valid_request_is_a_documented_answer(stack: Stack, fuzz_world: World) -> None:
    """Deterministic sweep: every string field of every seed request, set to "a\\x00b" (PostgreSQL text cannot hold
    NUL; a service must refuse it as INVALID_ARGUMENT, not crash on the insert)."""
    failures: list[Failure] = []
    user = user_metadata(fuzz_world.user)
    for rpc in RPCS:
        for seed in seeds_for(rpc, fuzz_world):
            for path in leaf_paths(seed.DESCRIPTOR):  # type: ignore[arg-type]
                request = type(seed)()
                request.CopyFrom(seed)
                target, field = _descend(request, path)  # type: ignore[misc]
                if field.type != FieldDescriptor.TYPE_STRING:
                    continue
                if field.is_repeated:
                    getattr(target, field.name)[:] = ["a\x00b"]
                else:
                    setattr(target, field.name, "a\x00b")
                if "request_id" in rpc.input.fields_by_name and path != ("request_id",):
                    request.request_id = str(uuid.uuid4())  # type: ignore[attr-defined]
                if (failure := send(stack, rpc, request, user)) is not None:
                    failures.append(failure)
    assert_healthy(stack)
    assert not failures, f"{len(failures)} undocumented answers; smallest per code:\n{report(failures)}"
