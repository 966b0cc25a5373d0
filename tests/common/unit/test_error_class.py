"""The one ErrorClass: its stored values never change, and every service's codec carries it to its API enum."""

from __future__ import annotations

import pytest
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pipeline_pb
from contentpipe.common.error_class import ErrorClass
from contentpipe.oauth.entrypoints import grpc_posting
from contentpipe.pipelines import codec
from contentpipe.pipelines.domain.model import PostState, StepError, TargetResult
from contentpipe.pipelines.service_layer.engine.targets import target_outcome
from contentpipe.pipelines.service_layer.ports import PostStatus
from contentpipe.scheduler.adapters.pipelines_client import run_info

pytestmark = pytest.mark.unit


def test_stored_values_are_the_names_the_databases_hold() -> None:
    # Posts' last_error and pipeline runs' step errors store these strings: renaming one breaks stored rows.
    assert {error_class.value for error_class in ErrorClass} == {
        "RETRYABLE",
        "PERMANENT",
        "RATE_LIMITED",
        "NEEDS_REAUTH",
        "REJECTED_BY_PLATFORM",
    }
    assert [error_class for error_class in ErrorClass if error_class.retryable] == [
        ErrorClass.RETRYABLE,
        ErrorClass.RATE_LIMITED,
    ]


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_every_class_survives_a_step_error_round_trip(error_class: ErrorClass) -> None:
    error = StepError(error_class, "REASON", "message")
    assert codec.error_from_json(codec.error_to_json(error)) == error
    assert codec.ERROR_CLASS_PB[error_class] != pipeline_pb.STEP_ERROR_CLASS_UNSPECIFIED


@pytest.mark.parametrize("error_class", list(ErrorClass))
def test_every_class_maps_in_every_codec_and_keeps_its_retryability(error_class: ErrorClass) -> None:
    # oauth answers a post's class (an unmapped one would make GetPost INTERNAL), pipelines reads it back and
    # answers a step's class, the scheduler reads that one: at each hop a class keeps whether it may be retried.
    # (generation has no class: its errors carry `retryable` itself.)
    post_class = grpc_posting.ERROR_CLASS_PB[error_class]
    assert post_class != post_pb.POST_ERROR_CLASS_UNSPECIFIED
    read_by_pipelines = codec.POST_ERROR_CLASS[post_class]
    assert read_by_pipelines.retryable == error_class.retryable
    step_class = codec.ERROR_CLASS_PB[error_class]
    assert step_class != pipeline_pb.STEP_ERROR_CLASS_UNSPECIFIED
    run = pipeline_pb.PipelineRun(
        name="pipelines/p/runs/r",
        state=pipeline_pb.PIPELINE_RUN_STATE_FAILED,
        error=pipeline_pb.StepError(error_class=step_class),
    )
    read_by_scheduler = run_info(run).error_class
    assert read_by_scheduler is not None and read_by_scheduler.retryable == error_class.retryable


@pytest.mark.parametrize(
    ("post_class", "step_class"),
    [
        (post_pb.POST_ERROR_CLASS_RETRYABLE, ErrorClass.RETRYABLE),
        (post_pb.POST_ERROR_CLASS_RATE_LIMITED, ErrorClass.RATE_LIMITED),
        (post_pb.POST_ERROR_CLASS_NEEDS_REAUTH, ErrorClass.NEEDS_REAUTH),
        (post_pb.POST_ERROR_CLASS_REJECTED_BY_PLATFORM, ErrorClass.PERMANENT),
        (post_pb.POST_ERROR_CLASS_UNSPECIFIED, ErrorClass.PERMANENT),
    ],
)
def test_a_failed_posts_class_becomes_its_targets_class(
    post_class: post_pb.PostErrorClass.ValueType, step_class: ErrorClass
) -> None:
    status = PostStatus(name="posts/p1", state=PostState.FAILED, error_class=codec.POST_ERROR_CLASS.get(post_class))
    outcome = target_outcome("post", TargetResult(connection="connections/a", post="posts/p1"), status)
    assert outcome.error is not None and outcome.error.error_class is step_class


@pytest.mark.parametrize(
    ("step_class", "expected"),
    [
        (pipeline_pb.STEP_ERROR_CLASS_UNSPECIFIED, None),
        (pipeline_pb.STEP_ERROR_CLASS_RETRYABLE, ErrorClass.RETRYABLE),
        (pipeline_pb.STEP_ERROR_CLASS_PERMANENT, ErrorClass.PERMANENT),
        (pipeline_pb.STEP_ERROR_CLASS_NEEDS_REAUTH, ErrorClass.NEEDS_REAUTH),
        (pipeline_pb.STEP_ERROR_CLASS_RATE_LIMITED, ErrorClass.RATE_LIMITED),
    ],
)
def test_the_scheduler_reads_a_runs_class_from_the_api(
    step_class: pipeline_pb.StepErrorClass.ValueType, expected: ErrorClass | None
) -> None:
    run = pipeline_pb.PipelineRun(
        name="pipelines/p/runs/r",
        state=pipeline_pb.PIPELINE_RUN_STATE_FAILED,
        error=pipeline_pb.StepError(error_class=step_class),
    )
    assert run_info(run).error_class is expected
