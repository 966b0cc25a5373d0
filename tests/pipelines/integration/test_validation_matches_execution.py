"""CreatePipeline refuses what the generation and posting services would refuse when the steps run.

The four real services (and the platforms' OAuth fakes): each generate_content step goes to CreateGeneration
and each post_to_platform target to CreatePost with validate_only; their violations come back under the
step's path, templates rendered with placeholder values of the right type.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from contentpipe.api.generation.v1 import generation_service_pb2 as gen_pb
from contentpipe.api.generation.v1 import generation_service_pb2_grpc as gen_grpc
from contentpipe.api.oauth.v1 import platform_pb2
from contentpipe.api.oauth.v1 import posting_service_pb2 as post_pb
from contentpipe.api.oauth.v1 import posting_service_pb2_grpc as post_grpc
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pb
from contentpipe.api.pipelines.v1 import pipeline_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2

from tests.security.fakes import ExternalFakes
from tests.security.stack import Stack, user_metadata
from tests.security.tenants import connect_platform

pytestmark = pytest.mark.integration

VIDEO, IMAGE, TEXT = gen_pb.GENERATION_KIND_VIDEO, gen_pb.GENERATION_KIND_IMAGE, gen_pb.GENERATION_KIND_TEXT


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ExternalFakes(google=True) as fakes:
        workdir = tmp_path_factory.mktemp("validation-stack")
        # Replicate is deliberately not configured (no token): its steps must be refused at create.
        env = {**fakes.service_env(workdir), "REPLICATE_API_TOKEN": "", "COG_MODELS": ""}
        stack = Stack(workdir, env=env, services=("generation", "oauth", "pipelines"))
        try:
            yield stack.start(timeout=180)  # three processes on a shared, loaded machine
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def replicate_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Replicate configured (validate_only never calls it): its models' own limits apply."""
    with ExternalFakes() as fakes:
        workdir = tmp_path_factory.mktemp("validation-replicate")
        stack = Stack(workdir, env=fakes.service_env(workdir), services=("generation", "pipelines"))
        try:
            yield stack.start(timeout=180)
        finally:
            stack.stop()


def violations(error: grpc.RpcError) -> dict[str, str]:
    metadata: list[tuple[str, bytes]] = list(error.trailing_metadata() or ())  # type: ignore[arg-type]
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    return {v.field: v.description for v in bad.field_violations}
    return {}


def _struct(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def generate(step_id: str, kind: int, prompt: str = "a fox", **fields: Any) -> pb.Step:
    options = {k: v for k, v in fields.items() if k not in ("provider", "model")}
    return pb.Step(
        id=step_id,
        generate_content=pb.GenerateContentStep(
            kind=kind,  # type: ignore[arg-type]
            prompt=prompt,
            options=gen_pb.GenerationOptions(**options),
            provider=fields.get("provider", ""),
            model=fields.get("model", ""),
        ),
    )


def post(step_id: str, connection: str, caption: str = "hello", media: str = "", **options: Any) -> pb.Step:
    return pb.Step(
        id=step_id,
        post_to_platform=pb.PostToPlatformStep(
            connections=[connection],
            caption=caption,
            media_step_id=media,
            options=post_pb.PlatformOptions(**options),
        ),
    )


def refused(stack: Stack, user: str, steps: list[pb.Step]) -> dict[str, str]:
    """The violations CreatePipeline answers, the same with and without validate_only."""
    stub = pb_grpc.PipelineServiceStub(stack.channel("pipelines"))
    pipeline = pb.Pipeline(display_name="Checked", steps=steps)
    found = []
    for validate_only in (True, False):
        with pytest.raises(grpc.RpcError) as caught:
            stub.CreatePipeline(
                pb.CreatePipelineRequest(pipeline=pipeline, validate_only=validate_only),
                metadata=user_metadata(user),
                timeout=30,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        found.append(violations(caught.value))
    assert found[0] == found[1]
    assert not stub.ListPipelines(pb.ListPipelinesRequest(), metadata=user_metadata(user)).pipelines
    return found[0]


def test_every_generation_option_limit_is_refused_under_the_steps_path(stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    # The rendered prompt is 4,005 characters: only rendering the template shows it is too long.
    long_prompt = "{{ run.trigger_date }}" + "x" * 3995
    cases = [
        (generate("dur", VIDEO, duration_seconds=60), "options.duration_seconds", "0.5 to 30 seconds"),
        (generate("wide", VIDEO, width=4096), "options.width", "64 to 2048"),
        (generate("odd", IMAGE, height=500), "options.height", "multiple of 8"),
        (generate("fps", VIDEO, fps=90), "options.fps", "1 to 60"),
        (generate("motion", VIDEO, motion_strength=300), "options.motion_strength", "1 to 255"),
        (generate("stillfps", IMAGE, fps=10), "options.fps", "only used for VIDEO"),
        (generate("imgdur", IMAGE, duration_seconds=2), "options.duration_seconds", "only used for VIDEO"),
        (generate("tokens", TEXT, max_tokens=5000), "options.max_tokens", "1 to 4,096"),
        (generate("textwide", TEXT, width=512), "options.width", "not used for TEXT"),
        (generate("vidtokens", VIDEO, max_tokens=10), "options.max_tokens", "only used for TEXT"),
        (generate("texthigh", TEXT, height=512), "options.height", "not used for TEXT"),
        (generate("textfps", TEXT, fps=10), "options.fps", "not used for TEXT"),
        (generate("textdur", TEXT, duration_seconds=2), "options.duration_seconds", "not used for TEXT"),
        (generate("textimg", TEXT, input_image_uri="https://example.com/a.png"), "options.input_image_uri", "TEXT"),
        (generate("stillmotion", IMAGE, motion_strength=10), "options.motion_strength", "only used for VIDEO"),
        (generate("short", VIDEO, duration_seconds=0.2), "options.duration_seconds", "0.5 to 30 seconds"),
        (generate("narrow", IMAGE, width=32), "options.width", "64 to 2048"),
        (generate("huge", IMAGE, model_input=_struct(blob="b" * 17000)), "options.model_input", "16,384 bytes"),
        (generate("ftp", IMAGE, input_image_uri="ftp://example.com/a.png"), "options.input_image_uri", "http(s)"),
        (generate("typo", IMAGE, provider="replicat"), "provider", "unknown provider 'replicat'"),
        (generate("repl", IMAGE, provider="replicate"), "provider", "REPLICATE_API_TOKEN"),
        (generate("cog", IMAGE, provider="cog"), "provider", "COG_MODELS"),
        (generate("model", IMAGE, model="no-such-model"), "model", "unknown model 'no-such-model'"),
        (generate("mismatch", IMAGE, model="local-video"), "model", "produces VIDEO, not IMAGE"),
        (generate("prompt", TEXT, prompt=long_prompt), "prompt", "at most 4,000 characters"),
    ]
    found = refused(stack, user, [step for step, _, _ in cases])
    for index, (step, field, expected) in enumerate(cases):
        path = f"pipeline.steps[{index}].generate_content.{field}"
        assert path in found, (step.id, sorted(found))
        assert expected in found[path], (path, found[path])
    assert len(found) == len(cases), sorted(found)


def test_each_models_own_limits_are_refused_under_the_steps_path(replicate_stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    svd, flux = "stability-ai/stable-video-diffusion", "black-forest-labs/flux-schnell"
    replicate = {"provider": "replicate"}
    cases = [
        (generate("svdwide", VIDEO, width=1088, **replicate), "options.width", f"64 to 1024 pixels for {svd}"),
        (generate("svdodd", VIDEO, width=600, **replicate), "options.width", f"multiple of 64 for {svd}"),
        (generate("svdfps", VIDEO, fps=40, **replicate), "options.fps", f"5 to 30 for {svd}"),
        (generate("svdlong", VIDEO, duration_seconds=8, **replicate), "options.duration_seconds", f"for {svd}"),
        (
            generate("svdframes", VIDEO, fps=30, duration_seconds=5, **replicate),
            "options.duration_seconds",
            f"{svd} produces at most 25 frames",
        ),
        (generate("fluxlow", IMAGE, height=200, **replicate), "options.height", f"256 to 1440 pixels for {flux}"),
        (generate("fluxvideo", IMAGE, model=svd, **replicate), "model", "produces VIDEO, not IMAGE"),
    ]
    found = refused(replicate_stack, user, [step for step, _, _ in cases])
    for index, (step, field, expected) in enumerate(cases):
        path = f"pipeline.steps[{index}].generate_content.{field}"
        assert path in found, (step.id, sorted(found))
        assert expected in found[path], (path, found[path])


def test_every_platform_option_the_posting_service_checks_is_refused_under_the_steps_path(stack: Stack) -> None:
    """One step per check CreatePost makes (posts_rules.validate_post), each on a connection made through the
    platform's OAuth fake: the violation comes back under that step's own path, naming the option."""
    user = f"user-{uuid.uuid4().hex[:8]}"
    metadata = user_metadata(user)
    x, linkedin, tiktok, facebook, instagram, youtube = (
        connect_platform(stack, metadata, platform)
        for platform in (
            platform_pb2.PLATFORM_TWITTER,
            platform_pb2.PLATFORM_LINKEDIN,
            platform_pb2.PLATFORM_TIKTOK,
            platform_pb2.PLATFORM_FACEBOOK,
            platform_pb2.PLATFORM_INSTAGRAM,
            platform_pb2.PLATFORM_GOOGLE,
        )
    )
    tiktok_ok = post_pb.TikTokOptions(privacy_level="SELF_ONLY")
    page = post_pb.FacebookOptions(page_id="page-1")

    def yt(**options: Any) -> post_pb.YouTubeOptions:
        return post_pb.YouTubeOptions(**{"title": "Daily clip", **options})

    caption, options = "post_to_platform.caption", "post_to_platform.options"
    cases = [
        # X: weighted length (templates rendered first), reply id.
        (post("x-long", x, caption="{{ run.trigger_date }} " + "y" * 275), caption, "286 weighted characters"),
        (post("x-weighted", x, caption="字" * 150), caption, "300 weighted characters; X allows at most 280"),
        (
            post("x-reply", x, twitter=post_pb.TwitterOptions(reply_to_post_id="not-a-number")),
            f"{options}.twitter.reply_to_post_id",
            "a numeric post id",
        ),
        # LinkedIn: visibility, commentary length.
        (
            post("li-vis", linkedin, linkedin=post_pb.LinkedInOptions(visibility="FRIENDS")),
            f"{options}.linkedin.visibility",
            "PUBLIC or CONNECTIONS",
        ),
        (post("li-long", linkedin, caption="l" * 3001), caption, "LinkedIn allows at most 3000"),
        # TikTok: privacy level required and from its list, caption length.
        (post("tt-missing", tiktok, media="clip"), f"{options}.tiktok.privacy_level", "required for TikTok: one of"),
        (
            post("tt-bad", tiktok, media="clip", tiktok=post_pb.TikTokOptions(privacy_level="EVERYONE")),
            f"{options}.tiktok.privacy_level",
            "one of PUBLIC_TO_EVERYONE",
        ),
        (post("tt-long", tiktok, caption="t" * 2201, media="clip", tiktok=tiktok_ok), caption, "at most 2200"),
        # Facebook: the Page, and one of the connection's own.
        (post("fb-missing", facebook), f"{options}.facebook.page_id", "required for Facebook"),
        (
            post("fb-foreign", facebook, facebook=post_pb.FacebookOptions(page_id="999999")),
            f"{options}.facebook.page_id",
            "not one of this connection's Pages",
        ),
        # (Facebook's 63,206-character message is beyond any caption template, which stops at 20,000.)
        (post("fb-ok", facebook, caption="f" * 20000, facebook=page), None, ""),
        # Instagram: media required, caption length.
        (
            post("ig-bare", instagram),
            "post_to_platform.connections[0]",
            f"Instagram needs at least one image or video (for {instagram}): set media_step_id",
        ),
        (post("ig-long", instagram, caption="i" * 2201, media="clip"), caption, "Instagram allows at most 2200"),
        # YouTube: every option, the description (caption) in bytes, exactly one video.
        (post("yt-untitled", youtube, media="clip"), f"{options}.youtube.title", "required for YouTube"),
        (
            post("yt-title", youtube, media="clip", youtube=yt(title="T" * 101)),
            f"{options}.youtube.title",
            "at most 100",
        ),
        (
            post("yt-angle", youtube, media="clip", youtube=yt(title="a <b> title")),
            f"{options}.youtube.title",
            "must not contain < or >",
        ),
        (
            post("yt-desc", youtube, media="clip", youtube=yt(description="é" * 2501)),
            f"{options}.youtube.description",
            "at most 5,000 bytes",
        ),
        (
            post("yt-privacy", youtube, media="clip", youtube=yt(privacy_status="friends")),
            f"{options}.youtube.privacy_status",
            "one of public, unlisted, private",
        ),
        (
            post("yt-tags", youtube, media="clip", youtube=yt(tags=["t" * 300, "u" * 201])),
            f"{options}.youtube.tags",
            "at most 500 characters in all",
        ),
        (
            post("yt-category", youtube, media="clip", youtube=yt(category_id="music")),
            f"{options}.youtube.category_id",
            "a numeric YouTube category id",
        ),
        (post("yt-text", youtube, caption="é" * 2501, media="clip", youtube=yt()), caption, "5002 bytes"),
        (
            post("yt-image", youtube, media="pic", youtube=yt()),
            "post_to_platform.connections[0]",
            f"YouTube takes exactly one video (for {youtube}); step 'pic' makes image",
        ),
        (post("yt-bare", youtube, youtube=yt()), "post_to_platform.connections[0]", "YouTube needs a video"),
    ]
    steps = [generate("clip", VIDEO), generate("pic", IMAGE), *(step for step, _, _ in cases)]
    found = refused(stack, user, steps)
    for index, (step, field, expected) in enumerate(cases, start=2):
        if field is None:  # a control: nothing is reported for it
            assert not [path for path in found if path.startswith(f"pipeline.steps[{index}]")], (step.id, found)
            continue
        path = f"pipeline.steps[{index}].{field}"
        assert path in found, (step.id, path, sorted(found))
        assert expected in found[path], (step.id, path, found[path])
    assert not [path for path in found if path.startswith(("pipeline.steps[0]", "pipeline.steps[1]"))], found


def test_validate_only_creates_nothing_anywhere_and_names_nothing(stack: Stack) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    metadata = user_metadata(user)
    outbox = connect_platform_outbox(stack, metadata)
    stub = pb_grpc.PipelineServiceStub(stack.channel("pipelines"))
    pipeline = pb.Pipeline(
        display_name="Fine",
        steps=[generate("clip", VIDEO, duration_seconds=2), post("share", outbox, caption="{{ run.trigger_date }}")],
    )
    answer = stub.CreatePipeline(
        pb.CreatePipelineRequest(pipeline=pipeline, validate_only=True), metadata=metadata, timeout=30
    ).pipeline
    assert answer.name == "" and answer.display_name == "Fine" and len(answer.steps) == 2
    assert not stub.ListPipelines(pb.ListPipelinesRequest(), metadata=metadata).pipelines
    generations = gen_grpc.GenerationServiceStub(stack.channel("generation"))
    assert not generations.ListGenerations(gen_pb.ListGenerationsRequest(), metadata=metadata).generations
    posts = post_grpc.PostingServiceStub(stack.channel("oauth"))
    assert not posts.ListPosts(post_pb.ListPostsRequest(), metadata=metadata).posts
    # And the real create of the same definition succeeds.
    created = stub.CreatePipeline(pb.CreatePipelineRequest(pipeline=pipeline), metadata=metadata, timeout=30)
    assert created.pipeline.name.startswith("pipelines/")


def connect_platform_outbox(stack: Stack, metadata: Any) -> str:
    from contentpipe.api.oauth.v1 import connection_service_pb2 as conn
    from contentpipe.api.oauth.v1 import connection_service_pb2_grpc as conn_grpc

    stub = conn_grpc.ConnectionServiceStub(stack.channel("oauth"))
    done = stub.CompleteConnection(
        conn.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX), metadata=metadata, timeout=15
    )
    return str(done.connection.name)
