"""One user's world: one of every resource, created through the public RPCs, and the slots that name them."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import grpc
import httpx
from contentpipe.api.generation.v1 import generation_service_pb2 as gen
from contentpipe.api.oauth.v1 import connection_service_pb2 as conn
from contentpipe.api.oauth.v1 import platform_pb2, posting_service_pb2
from contentpipe.api.pipelines.v1 import pipeline_service_pb2 as pipe
from contentpipe.api.scheduler.v1 import notification_service_pb2 as notif
from contentpipe.api.scheduler.v1 import scheduler_service_pb2 as sched
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from tests.security.catalog import Rpc, all_rpcs
from tests.security.fakes import REDIRECT_URI
from tests.security.stack import Stack

Metadata = tuple[tuple[str, str], ...]

# The noun in an RPC's name → the collection its `name` (or `parent`) field takes.
NOUN_COLLECTIONS = {
    "Generation": "generations",
    "Connection": "connections",
    "Post": "posts",
    "Pipeline": "pipelines",
    "PipelineRun": "runs",
    "PipelineRuns": "pipelines",
    "RunPipelines": "pipelines",  # BatchRunPipelines
    "Job": "jobs",
    "JobRuns": "jobs",
    "Notification": "notifications",
}
# Reference fields (other than name/parent) → the collection they take.
FIELD_COLLECTIONS = {
    "pipeline": "pipelines",
    "job": "jobs",
    "connection": "connections",
    "connections": "connections",
    "resumed_run": "runs",
    "pipeline_run": "runs",
    "generation": "generations",
}
COLLECTION_OF_MESSAGE = {
    "Generation": "generations",
    "Connection": "connections",
    "Post": "posts",
    "Pipeline": "pipelines",
    "PipelineRun": "runs",
    "Job": "jobs",
    "Notification": "notifications",
}


def collection_of(name: str) -> str:
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "pipelines" and parts[2] == "runs":
        return "runs"
    return parts[0]


def method_noun(rpc: Rpc) -> str:
    words = re.findall(r"[A-Z][a-z]*", rpc.method.name)
    return "".join(words[1:])


@dataclass
class Slot:
    """A string field of a request that names a resource: `path` from the request root."""

    path: tuple[str, ...]
    collection: str | None  # None when the RPC's resource cannot be told from its name
    repeated: bool = False

    @property
    def is_target(self) -> bool:
        """The resource the RPC acts on (`name`/`parent`), not a reference inside a new resource."""
        return self.path[-1] in ("name", "parent")


def slots(rpc: Rpc) -> list[Slot]:
    found: list[Slot] = []
    noun_collection = NOUN_COLLECTIONS.get(method_noun(rpc))

    def visit(descriptor: Descriptor, path: tuple[str, ...], depth: int) -> None:
        for f in descriptor.fields:
            if f.type == FieldDescriptor.TYPE_STRING:
                if f.name in ("name", "parent"):
                    if depth == 0:
                        found.append(Slot((*path, f.name), noun_collection))
                    elif rpc.method.name.startswith("Update"):
                        found.append(Slot((*path, f.name), COLLECTION_OF_MESSAGE.get(descriptor.name)))
                elif f.name in FIELD_COLLECTIONS and descriptor.full_name != "contentpipe.api.pipelines.v1.StepOutputs":
                    found.append(Slot((*path, f.name), FIELD_COLLECTIONS[f.name], f.is_repeated))
            elif f.message_type is not None and depth < 4 and not f.message_type.GetOptions().map_entry:
                if f.message_type.full_name.startswith("google.protobuf"):
                    continue
                if f.is_repeated and f.name == "requests" and rpc.method.name.startswith("Batch"):
                    # Each request of a batch names its resource as the single call would.
                    visit(f.message_type, (*path, f.name), depth)
                    continue
                # Of other repeated messages only pipeline steps: the rest in requests are output-only.
                if f.is_repeated and f.name != "steps":
                    continue
                visit(f.message_type, (*path, f.name), depth + 1)

    visit(rpc.input, (), 0)
    return found


def set_slot(message: Message, slot: Slot, value: str) -> bool:
    """Set `value` at `slot` (the first element of repeated messages on the way); False if not reachable."""
    target: Any = message
    for part in slot.path[:-1]:
        child = getattr(target, part)
        if hasattr(child, "add"):  # repeated message: use the first element, if any
            if not len(child):
                return False
            target = child[0]
        else:
            target = child
    leaf = slot.path[-1]
    if slot.repeated:
        getattr(target, leaf)[:] = [value]
    else:
        setattr(target, leaf, value)
    return True


def _in(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromSeconds(int(time.time() + seconds))
    return ts


@dataclass
class World:
    """What one user created; `requests` are the valid requests used, reused as bases with foreign names."""

    user: str
    marker: str
    names: dict[str, str] = field(default_factory=dict)
    requests: dict[str, Message] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _rpc(method: str) -> Rpc:
    return next(rpc for rpc in all_rpcs() if rpc.method.name == method)


def invoke(stack: Stack, method: str, request: Message, metadata: Metadata, timeout: float = 15.0) -> Any:
    rpc = _rpc(method)
    try:
        return rpc.callable(stack.channel(rpc.process))(request, metadata=metadata, timeout=timeout)
    except grpc.RpcError as err:
        stack.observe(err.details())
        raise


def consent(authorization_uri: str) -> tuple[str, str]:
    """Play the user at the platform's (fake) consent screen: follow redirects back to the app; (code, state)."""
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        url = authorization_uri
        for _ in range(10):
            if url.startswith(REDIRECT_URI):
                query = parse_qs(urlsplit(url).query)
                assert "error" not in query, query
                return query["code"][0], query["state"][0]
            response = browser.get(url)
            assert response.status_code in (302, 303), (response.status_code, response.text[:300])
            url = urljoin(url, response.headers["location"])
    raise AssertionError("the platform never redirected back to the app")


def connect_platform(stack: Stack, metadata: Metadata, platform: platform_pb2.Platform.ValueType) -> str:
    """A real OAuth connection: StartConnection, consent at the loopback platform, CompleteConnection."""
    started = invoke(
        stack, "StartConnection", conn.StartConnectionRequest(platform=platform, redirect_uri=REDIRECT_URI), metadata
    )
    code, state = consent(started.authorization_uri)
    done = invoke(
        stack, "CompleteConnection", conn.CompleteConnectionRequest(platform=platform, code=code, state=state), metadata
    )
    return str(done.connection.name)


def build_world(stack: Stack, user: str, metadata: Metadata) -> World:
    """Create one of every resource as `user`; what could not be created is in `errors` with the status."""
    world = World(user=user, marker=f"marker-{uuid.uuid4().hex[:12]}")

    def step(kind: str, method: str, make: Callable[[], Message | None], pick: Callable[[Any], str]) -> None:
        request = make()
        if request is None:
            world.errors[kind] = "prerequisite missing"
            return
        world.requests[method] = request
        try:
            world.names[kind] = pick(invoke(stack, method, request, metadata))
        except grpc.RpcError as err:
            world.errors[kind] = f"{method}: {err.code().name} {err.details()}"

    step(
        "connections",
        "CompleteConnection",
        lambda: conn.CompleteConnectionRequest(platform=platform_pb2.PLATFORM_OUTBOX),
        lambda r: r.connection.name,
    )
    try:
        world.names["connections:twitter"] = connect_platform(stack, metadata, platform_pb2.PLATFORM_TWITTER)
    except (grpc.RpcError, AssertionError, httpx.HTTPError) as err:
        world.errors["connections:twitter"] = f"OAuth connection to X: {err}"
    step(
        "posts",
        "CreatePost",
        lambda: (
            posting_service_pb2.CreatePostRequest(
                post=posting_service_pb2.Post(connection=world.names["connections"], text=f"{world.marker} post text"),
                request_id=str(uuid.uuid4()),
            )
            if "connections" in world.names
            else None
        ),
        lambda r: r.post.name,
    )
    step(
        "generations",
        "CreateGeneration",
        lambda: gen.CreateGenerationRequest(
            generation=gen.Generation(kind=gen.GENERATION_KIND_TEXT, prompt=f"{world.marker} prompt"),
            request_id=str(uuid.uuid4()),
        ),
        lambda r: r.generation.name,
    )

    def pipeline_request() -> Message | None:
        steps = [
            pipe.Step(
                id="caption",
                generate_content=pipe.GenerateContentStep(
                    kind=gen.GENERATION_KIND_TEXT, prompt=f"{world.marker} pipeline prompt"
                ),
            )
        ]
        if "connections" in world.names:
            steps.append(
                pipe.Step(
                    id="post",
                    post_to_platform=pipe.PostToPlatformStep(
                        connections=[world.names["connections"]], caption=f"{world.marker} caption"
                    ),
                )
            )
        return pipe.CreatePipelineRequest(
            pipeline=pipe.Pipeline(display_name=f"{world.marker} pipeline", steps=steps),
            request_id=str(uuid.uuid4()),
        )

    step("pipelines", "CreatePipeline", pipeline_request, lambda r: r.pipeline.name)
    step(
        "runs",
        "RunPipeline",
        lambda: (
            pipe.RunPipelineRequest(name=world.names["pipelines"], request_id=str(uuid.uuid4()))
            if "pipelines" in world.names
            else None
        ),
        lambda r: r.run.name,
    )
    if "pipelines" in world.names:
        # The base of the batch call: one request, whose `name` the matrix points at the other user's resources.
        world.requests["BatchRunPipelines"] = pipe.BatchRunPipelinesRequest(
            requests=[pipe.RunPipelineRequest(name=world.names["pipelines"], request_id=str(uuid.uuid4()))]
        )
    step(
        "jobs",
        "CreateJob",
        lambda: (
            sched.CreateJobRequest(
                job=sched.Job(
                    pipeline=world.names["pipelines"], display_name=f"{world.marker} job", run_time=_in(86_400)
                ),
                request_id=str(uuid.uuid4()),
            )
            if "pipelines" in world.names
            else None
        ),
        lambda r: r.job.name,
    )
    # A notification: pausing a job tells its owner (JOB_PAUSED); list whatever the user has.
    if "jobs" in world.names:
        try:
            invoke(stack, "PauseJob", sched.PauseJobRequest(name=world.names["jobs"], reason="isolation"), metadata)
            invoke(stack, "ResumeJob", sched.ResumeJobRequest(name=world.names["jobs"]), metadata)
        except grpc.RpcError as err:
            world.errors["notifications"] = f"PauseJob/ResumeJob: {err.code().name} {err.details()}"
    try:
        listed = invoke(stack, "ListNotifications", notif.ListNotificationsRequest(), metadata)
        if listed.notifications:
            world.names["notifications"] = listed.notifications[0].name
        else:
            world.errors.setdefault("notifications", "none produced by pausing a job")
    except grpc.RpcError as err:
        world.errors["notifications"] = f"ListNotifications: {err.code().name} {err.details()}"
    # Update bases: the user's own resources, a harmless change.
    if "pipelines" in world.names:
        world.requests["UpdatePipeline"] = pipe.UpdatePipelineRequest(
            pipeline=pipe.Pipeline(name=world.names["pipelines"], display_name=f"{world.marker} renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    if "jobs" in world.names:
        world.requests["UpdateJob"] = sched.UpdateJobRequest(
            job=sched.Job(name=world.names["jobs"], display_name=f"{world.marker} renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    return world


# How to read back each kind of resource (for "A's resources unchanged").
GETTERS: dict[str, tuple[str, Callable[[str], Message], str]] = {
    "generations": ("GetGeneration", lambda n: gen.GetGenerationRequest(name=n), "generation"),
    "connections": ("GetConnection", lambda n: conn.GetConnectionRequest(name=n), "connection"),
    "posts": ("GetPost", lambda n: posting_service_pb2.GetPostRequest(name=n), "post"),
    "pipelines": ("GetPipeline", lambda n: pipe.GetPipelineRequest(name=n), "pipeline"),
    "runs": ("GetPipelineRun", lambda n: pipe.GetPipelineRunRequest(name=n), "run"),
    "jobs": ("GetJob", lambda n: sched.GetJobRequest(name=n), "job"),
}
# Fields another user's calls could change (and the system's own progress does not).
STABLE_FIELDS = {
    "generations": ("name", "owner", "prompt", "kind", "request_id"),
    "connections": ("name", "owner", "platform", "metadata"),
    "posts": ("name", "owner", "connection", "text", "request_id"),
    "pipelines": ("name", "owner", "display_name", "state", "steps", "revision", "etag"),
    "runs": ("name", "owner", "pipeline_revision", "request_id"),
    "jobs": ("name", "owner", "pipeline", "display_name", "state", "etag", "run_time"),
}
CANCELED_STATES = {
    "generations": ("state", gen.GENERATION_STATE_CANCELED),
    "posts": ("state", posting_service_pb2.POST_STATE_CANCELED),
    "runs": ("state", pipe.PIPELINE_RUN_STATE_CANCELED),
    "connections": ("status", conn.CONNECTION_STATUS_REVOKED),
}


def snapshot(stack: Stack, world: World, metadata: Metadata) -> dict[str, Message]:
    result: dict[str, Message] = {}
    for kind, name in world.names.items():
        if kind.split(":")[0] not in GETTERS:
            continue
        method, make, attr = GETTERS[kind.split(":")[0]]
        result[kind] = getattr(invoke(stack, method, make(name), metadata), attr)
    return result


def stable_view(kind: str, message: Message) -> dict[str, Any]:
    return {f: getattr(message, f) for f in STABLE_FIELDS[kind.split(":", maxsplit=1)[0]] if hasattr(message, f)}
