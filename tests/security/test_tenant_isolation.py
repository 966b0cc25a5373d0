"""Tenant isolation matrix: user B (directly, or through a service token acting for B) calls every RPC with user A's
resource names and every List: NOT_FOUND or an empty page, never A's data, and A's resources stay unchanged.

Every RPC in the descriptors is covered: the resource-naming fields of each request are found by name (`name`,
`parent`, `pipeline`, `job`, `connection(s)`, ...), so a new RPC joins the matrix without editing this file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from tests.security.catalog import Rpc, all_rpcs
from tests.security.stack import Stack, service_metadata, user_metadata
from tests.security.tenants import (
    CANCELED_STATES,
    Metadata,
    World,
    build_world,
    collection_of,
    set_slot,
    slots,
    snapshot,
    stable_view,
)

pytestmark = pytest.mark.integration

RPCS = all_rpcs()
DENIED_ON_LIST = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED}
REFUSED_REFERENCE = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
}


@dataclass
class Tenants:
    stack: Stack
    a: World
    b: World
    a_metadata: Metadata


@pytest.fixture(scope="session")
def tenants(stack: Stack) -> Iterator[Tenants]:
    user_a, user_b = f"tenant-a-{uuid.uuid4().hex[:8]}", f"tenant-b-{uuid.uuid4().hex[:8]}"
    a_metadata = user_metadata(user_a)
    a = build_world(stack, user_a, a_metadata)
    b = build_world(stack, user_b, user_metadata(user_b))
    yield Tenants(stack, a, b, a_metadata)


def test_each_user_can_create_one_of_every_resource(tenants: Tenants) -> None:
    """Precondition of the matrix (and a check of its recipes): notifications only where the system makes one."""
    for world in (tenants.a, tenants.b):
        missing = {kind: why for kind, why in world.errors.items() if kind != "notifications"}
        assert not missing, f"{world.user} could not create: {missing}"


def leaks(world: World, text: str, sent: str = "") -> list[str]:
    """A's marker, user id or resource names in `text`, other than the ones B itself sent."""
    secrets = [world.marker, world.user, *world.names.values()]
    return [s for s in secrets if s and s in text and s not in sent]


def response_text(response: Message) -> str:
    return text_format.MessageToString(response)


def check_call(
    stack: Stack, rpc: Rpc, request: Message, metadata: Metadata, *, a: World, expectation: str
) -> str | None:
    """Send `request` as B; return a violation description or None. `expectation` is one of
    `not_found` (B targets A's resource), `not_found_or_invalid` (a name of the wrong collection),
    `refused` (a new resource would reference A's), `no_leak` (reads/filters: any answer without A's data)."""
    sent = text_format.MessageToString(request, as_one_line=True)
    label = f"{rpc.id} {sent[:300]}"
    try:
        response = rpc.callable(stack.channel(rpc.process))(request, metadata=metadata, timeout=15)
    except grpc.RpcError as err:
        return check_refusal(stack, label, err.code(), err.details() or "", sent, a=a, expectation=expectation)
    if refusal := batch_refusal(response):
        # A batch answers OK with one result per request: each refused request carries the status it would get.
        return check_refusal(stack, label, *refusal, sent, a=a, expectation=expectation)
    if expectation != "no_leak":
        return f"{label}: OK, expected refusal ({expectation}); answer: {response_text(response)[:300]!r}"
    if found := leaks(a, response_text(response), sent):
        return f"{label}: OK with A's data {found}"
    return None


def batch_refusal(response: Message) -> tuple[grpc.StatusCode, str] | None:
    """The status of a batch response whose every result is an error (that of the first), else None."""
    results = getattr(response, "results", None)
    if not results or any(result.WhichOneof("result") != "error" for result in results):
        return None
    codes = {code.value[0]: code for code in grpc.StatusCode}
    return codes[results[0].error.code], results[0].error.message


def check_refusal(
    stack: Stack, label: str, code: grpc.StatusCode, details: str, sent: str, *, a: World, expectation: str
) -> str | None:
    stack.observe(details)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"{label}: UNIMPLEMENTED (the matrix covers every RPC in the descriptors)"
    if found := leaks(a, details, sent):
        return f"{label}: error message reveals A's data {found}: {details!r}"
    allowed = {
        "not_found": {grpc.StatusCode.NOT_FOUND},
        "not_found_or_invalid": {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT},
        "refused": REFUSED_REFERENCE,
        "no_leak": DENIED_ON_LIST | REFUSED_REFERENCE,
    }[expectation]
    if code not in allowed:
        return f"{label}: {code.name} {details!r}, expected {sorted(c.name for c in allowed)}"
    return None


def matrix(t: Tenants, metadata: Metadata) -> list[str]:
    violations: list[str] = []
    for rpc in RPCS:
        base = t.b.requests.get(rpc.method.name) or rpc.request_class()()
        rpc_slots = slots(rpc)
        is_list = rpc.method.name.startswith("List")
        creates = rpc.method.name.startswith("Create")
        if not rpc_slots or is_list:
            # Every List (and any RPC without a resource field) as B: nothing of A's.
            plain = rpc.request_class()()
            plain.CopyFrom(base)
            if violation := check_call(t.stack, rpc, plain, metadata, a=t.a, expectation="no_leak"):
                violations.append(violation)
        for slot in rpc_slots:
            for a_name in t.a.names.values():
                request = rpc.request_class()()
                request.CopyFrom(base)
                if "request_id" in rpc.input.fields_by_name:
                    request.request_id = str(uuid.uuid4())  # type: ignore[attr-defined]  # a new call, not a replay
                for item in getattr(request, "requests", ()):  # the requests of a batch, likewise
                    item.request_id = str(uuid.uuid4())
                if not set_slot(request, slot, a_name):
                    continue
                matches = slot.collection == collection_of(a_name)
                if is_list or not (slot.is_target or creates):
                    expectation = "no_leak"
                elif slot.is_target:
                    expectation = "not_found" if matches else "not_found_or_invalid"
                elif rpc.method.name.startswith("Update"):
                    continue  # references inside an update are outside its field mask
                else:
                    expectation = "refused" if matches else "no_leak"
                if violation := check_call(t.stack, rpc, request, metadata, a=t.a, expectation=expectation):
                    violations.append(violation)
    return violations


def assert_a_unchanged(t: Tenants, before: dict[str, Message]) -> None:
    after = snapshot(t.stack, t.a, t.a_metadata)
    for kind, old in before.items():
        new = after[kind]
        assert stable_view(kind, new) == stable_view(kind, old), f"A's {kind} changed by B's calls"
        if kind.split(":")[0] in CANCELED_STATES:
            attr, canceled = CANCELED_STATES[kind.split(":")[0]]
            assert getattr(new, attr) != canceled or getattr(old, attr) == canceled, f"A's {kind} was canceled"


@pytest.mark.parametrize("identity", ["user-token", "service-token-acting-for-b"])
def test_user_b_cannot_see_or_touch_user_a_resources(tenants: Tenants, identity: str) -> None:
    assert tenants.a.names, f"A created nothing, the matrix would prove nothing: {tenants.a.errors}"
    metadata = user_metadata(tenants.b.user) if identity == "user-token" else service_metadata(tenants.b.user)
    before = snapshot(tenants.stack, tenants.a, tenants.a_metadata)
    violations = matrix(tenants, metadata)
    assert_a_unchanged(tenants, before)
    assert not violations, f"{len(violations)} isolation violations:\n" + "\n".join(violations)


def test_matrix_covers_every_rpc_in_the_descriptors() -> None:
    """Each RPC either names a resource (and gets A's names) or is called plainly as B."""
    for rpc in RPCS:
        named = {slot.path[-1] for slot in slots(rpc)}
        if rpc.method.name.startswith(
            ("Get", "Update", "Delete", "Cancel", "Resume", "Pause", "Trigger", "Run", "Batch")
        ):
            assert named & {"name"}, f"{rpc.id}: no resource name slot found"
        if rpc.method.name in ("ListPipelineRuns", "ListJobRuns"):
            assert "parent" in named, rpc.id
