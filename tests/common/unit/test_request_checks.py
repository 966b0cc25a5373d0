"""Request checks every RPC passes before its servicer: bytes that parse, no NUL in any text field, and only
finite numbers in JSON values."""

from __future__ import annotations

import pytest
from contentpipe.api.generation.v1 import generation_service_pb2
from contentpipe.api.pipelines.v1 import pipeline_service_pb2
from contentpipe.common.errors import InvalidArgument
from contentpipe.common.request_checks import (
    UndecodableRequest,
    check_request,
    field_violations,
    tolerant_deserializer,
)
from google.protobuf import struct_pb2

pytestmark = pytest.mark.unit


def _pipeline_request() -> pipeline_service_pb2.CreatePipelineRequest:
    request = pipeline_service_pb2.CreatePipelineRequest(request_id="r-1")
    request.pipeline.display_name = "weekly"
    request.pipeline.steps.add(id="caption").generate_content.prompt = "a fox"
    post = request.pipeline.steps.add(id="post").post_to_platform
    post.connections.extend(["connections/a", "connections/b"])
    post.caption = "{{ steps.caption.text }}"
    return request


def test_a_valid_request_passes() -> None:
    check_request(_pipeline_request())
    assert field_violations(_pipeline_request()) == []


def test_nul_is_named_by_its_full_path_in_nested_and_repeated_fields() -> None:
    request = _pipeline_request()
    request.pipeline.steps[1].post_to_platform.connections[1] = "connections/\x00"
    request.pipeline.steps[0].generate_content.prompt = "a\x00b"
    request.request_id = "\x00"
    with pytest.raises(InvalidArgument) as raised:
        check_request(request)
    fields = {v.field for v in raised.value.violations}
    assert fields == {
        "request_id",
        "pipeline.steps[0].generate_content.prompt",
        "pipeline.steps[1].post_to_platform.connections[1]",
    }
    assert raised.value.reason == "NUL_IN_TEXT"
    assert "NUL" in raised.value.message


def test_nul_in_map_keys_and_struct_values_is_found() -> None:
    struct = struct_pb2.Struct()
    struct.update({"ok": "fine", "bad\x00key": 1, "nested": {"deep": ["x", "y\x00"]}})
    paths = sorted(v.field for v in field_violations(struct))
    assert paths == [
        "fields['bad\\x00key']",
        "fields['nested'].struct_value.fields['deep'].list_value.values[1].string_value",
    ]


def test_nan_and_infinity_in_json_values_are_refused_by_path_and_other_doubles_pass() -> None:
    request = generation_service_pb2.CreateGenerationRequest()
    model_input = request.generation.options.model_input
    model_input.update({"ok": 1.5, "list": [1, float("inf")], "nested": {"x": float("nan")}})
    with pytest.raises(InvalidArgument) as raised:
        check_request(request)
    assert sorted(v.field for v in raised.value.violations) == [
        "generation.options.model_input.fields['list'].list_value.values[1].number_value",
        "generation.options.model_input.fields['nested'].struct_value.fields['x'].number_value",
    ]
    assert raised.value.reason == "NON_FINITE_NUMBER"
    assert "finite" in raised.value.message
    # A plain double field is the domain's to judge; only JSON values cannot hold these numbers.
    run = pipeline_service_pb2.CreatePipelineRequest()
    run.pipeline.steps.add(id="s").retry_policy.backoff_multiplier = float("inf")
    assert field_violations(run) == []


def test_violations_are_bounded() -> None:
    request = _pipeline_request()
    request.pipeline.steps[1].post_to_platform.connections[:] = ["\x00"] * 500
    assert len(field_violations(request)) == 20


def test_bytes_that_do_not_parse_become_an_undecodable_request_refused_as_invalid_argument() -> None:
    deserialize = tolerant_deserializer(generation_service_pb2.GetGenerationRequest.FromString)
    assert deserialize is not None
    assert tolerant_deserializer(deserialize) is deserialize  # wrapping twice changes nothing
    good = generation_service_pb2.GetGenerationRequest(name="generations/1").SerializeToString()
    assert deserialize(good).name == "generations/1"
    for bad in (b"\x08", b"\xff\xff\xff\xff", b"\x0a\x02\xc3\x28", b"\x0a\x64abc"):
        decoded = deserialize(bad)
        assert isinstance(decoded, UndecodableRequest)
        with pytest.raises(InvalidArgument) as raised:
            check_request(decoded)
        assert raised.value.reason == "MALFORMED_REQUEST"
        assert "contentpipe.api.generation.v1.GetGenerationRequest" in raised.value.message
