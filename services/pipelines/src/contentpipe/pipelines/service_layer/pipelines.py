"""Use cases on pipeline definitions: create, read, list, update (update_mask + etag), delete."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from contentpipe.common.errors import (
    Aborted,
    ContentpipeError,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from contentpipe.common.etags import check_etag
from contentpipe.common.ids import new_id
from contentpipe.pipelines.domain import validation
from contentpipe.pipelines.domain.model import (
    Pipeline,
    PipelineRun,
    PipelineState,
    PostToPlatform,
    Step,
)
from contentpipe.pipelines.service_layer import dry_run
from contentpipe.pipelines.service_layer.ports import Connections, Page, Peers, PipelineRepository, RunRepository

UPDATABLE_FIELDS = ("display_name", "description", "state", "steps")
MAX_REQUEST_ID = 128


@dataclass(frozen=True, slots=True)
class PipelineDraft:
    """What a caller sends for create/update (output-only fields are ignored)."""

    display_name: str
    description: str
    state: PipelineState | None
    steps: tuple[Step, ...]
    etag: str = ""


def _check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument.single("request_id", f"at most {MAX_REQUEST_ID} characters")


async def validate_definition(display_name: str, description: str, steps: tuple[Step, ...], peers: Peers) -> None:
    """All the rules; raises InvalidArgument listing every violation found.

    Static rules first, then the connections' ownership, then what the generation and posting services
    would refuse when the steps run (dry_run). A field already reported keeps its first description."""
    violations = validation.validate_header(display_name, description)
    violations.extend(validation.validate_steps(steps))
    violations.extend(await _connection_violations(steps, peers.connections))
    reported = {violation.field for violation in violations}
    for violation in await dry_run.peer_violations(display_name, steps, peers):
        if violation.field not in reported:
            reported.add(violation.field)
            violations.append(violation)
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(
            f"invalid pipeline: {first.field}: {first.description}{more}", violations, reason="INVALID_PIPELINE"
        )


async def _connection_violations(steps: tuple[Step, ...], connections: Connections) -> list[FieldViolation]:
    """Each connection must exist and belong to the caller (asked with the caller's identity)."""
    names = sorted(
        {
            name
            for step in steps
            if isinstance(step.action, PostToPlatform)
            for name in step.action.connections
            if validation.CONNECTION_NAME.match(name)
        }
    )
    missing: dict[str, str] = {}

    async def look_up(name: str) -> None:
        try:
            await connections.get(name, acting_for=None)
        except NotFound:
            missing[name] = f"{name} does not exist or is not yours"
            return
        except (Unavailable, DeadlineExceeded) as exc:
            raise dry_run.step_not_checked(name, "oauth (connections)", exc) from None
        except ContentpipeError as exc:
            if isinstance(exc, InvalidArgument):
                missing[name] = f"{name} is not a valid connection name"
                return
            raise

    await asyncio.gather(*(look_up(name) for name in names))
    violations: list[FieldViolation] = []
    for index, step in enumerate(steps):
        action = step.action
        if not isinstance(action, PostToPlatform):
            continue
        for position, name in enumerate(action.connections):
            if name in missing:
                violations.append(
                    FieldViolation(validation.step_path(index, step, "connections", f"[{position}]"), missing[name])
                )
    # Whether each platform takes the media the step attaches is the posting service's rule: the dry run asks it.
    return violations


class PipelineService:
    def __init__(self, pipelines: PipelineRepository, runs: RunRepository, peers: Peers) -> None:
        self._pipelines = pipelines
        self._runs = runs
        self._peers = peers

    async def create(self, owner: str, draft: PipelineDraft, request_id: str, validate_only: bool) -> Pipeline:
        _check_request_id(request_id)
        await validate_definition(draft.display_name, draft.description, draft.steps, self._peers)
        now = datetime.now(UTC)
        pipeline = Pipeline(
            id=new_id(),
            owner=owner,
            display_name=draft.display_name,
            description=draft.description,
            state=draft.state or PipelineState.ACTIVE,
            steps=draft.steps,
            revision=1,
            create_time=now,
            update_time=now,
        )
        if validate_only:
            # AIP-163: what would be created, but nothing was: no id, so no name a client could look up.
            return replace(pipeline, id="")
        return await self._pipelines.add(pipeline, request_id)

    async def get(self, owner: str, pipeline_id: str) -> Pipeline:
        pipeline = await self._pipelines.get(owner, pipeline_id)
        if pipeline is None:
            raise NotFound(f"pipelines/{pipeline_id} not found", reason="PIPELINE_NOT_FOUND")
        return pipeline

    async def list_page(
        self, owner: str, state: PipelineState | None, limit: int, after: dict[str, object] | None
    ) -> Page:
        return await self._pipelines.list_page(owner, state, limit, after)

    async def update(self, owner: str, pipeline_id: str, draft: PipelineDraft, mask: Sequence[str]) -> Pipeline:
        fields = _mask(mask)
        current = await self.get(owner, pipeline_id)
        check_etag(draft.etag, current.revision, current.name)
        updated = replace(
            current,
            display_name=draft.display_name if "display_name" in fields else current.display_name,
            description=draft.description if "description" in fields else current.description,
            state=(draft.state or PipelineState.ACTIVE) if "state" in fields else current.state,
            steps=draft.steps if "steps" in fields else current.steps,
            revision=current.revision + 1,
            update_time=datetime.now(UTC),
        )
        if "steps" in fields:
            await validate_definition(updated.display_name, updated.description, updated.steps, self._peers)
        else:
            violations = validation.validate_header(updated.display_name, updated.description)
            if violations:
                raise InvalidArgument(
                    f"invalid pipeline: {violations[0].field}: {violations[0].description}",
                    violations,
                    reason="INVALID_PIPELINE",
                )
        if not await self._pipelines.replace(updated, current.revision):
            raise Aborted(
                f"pipelines/{pipeline_id} was changed concurrently; read it again and retry", reason="ETAG_MISMATCH"
            )
        if "state" in fields:
            await self._sync_jobs(updated)
        return updated

    async def _sync_jobs(self, pipeline: Pipeline) -> None:
        """A paused pipeline's jobs pause with it (and resume with it), so none sits ACTIVE firing refused runs.

        After the pipeline is stored: a failure here leaves the pipeline's state right and the call retryable
        (pausing or resuming again is a no-op for jobs already done)."""
        try:
            if pipeline.state == PipelineState.PAUSED:
                await self._peers.jobs.pause_for_pipeline(pipeline.name)
            else:
                await self._peers.jobs.resume_for_pipeline(pipeline.name)
        except ContentpipeError as exc:
            verb = "paused" if pipeline.state == PipelineState.PAUSED else "resumed"
            raise Unavailable(
                f"{pipeline.name} is {pipeline.state.value} but its scheduler jobs could not be {verb} "
                f"({exc.message}); send the same update again",
                reason="JOBS_NOT_SYNCED",
            ) from None

    async def delete(self, owner: str, pipeline_id: str, etag: str) -> list[PipelineRun]:
        """Deletes the pipeline and its history; returns the runs that were in flight (to cancel children)."""
        current = await self.get(owner, pipeline_id)
        check_etag(etag, current.revision, current.name)
        in_flight = await self._runs.cancel_runs_of_pipeline(pipeline_id)
        if not await self._pipelines.delete(owner, pipeline_id, current.revision):
            raise Aborted(
                f"pipelines/{pipeline_id} was changed concurrently; read it again and retry", reason="ETAG_MISMATCH"
            )
        return in_flight


def _mask(mask: Sequence[str]) -> set[str]:
    """The fields to replace; the entrypoint turns an absent mask into the populated fields (AIP-134)."""
    if list(mask) == ["*"]:
        return set(UPDATABLE_FIELDS)
    fields: set[str] = set()
    if not mask:
        raise InvalidArgument.single("update_mask", "nothing to update: name the fields to change")
    for path in mask:
        if path not in UPDATABLE_FIELDS:
            raise InvalidArgument.single(
                "update_mask", f"cannot update {path!r}; updatable: {', '.join(UPDATABLE_FIELDS)}"
            )
        fields.add(path)
    return fields
