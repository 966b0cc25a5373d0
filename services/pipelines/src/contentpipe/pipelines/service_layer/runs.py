"""Use cases on runs: queue (idempotent, one or a batch), read, list history, cancel, resume from the failed step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from contentpipe.common.changes import ChangeNotifier, wait_for, wait_seconds
from contentpipe.common.errors import ContentpipeError, FailedPrecondition, InvalidArgument, NotFound
from contentpipe.common.ids import new_id
from contentpipe.common.telemetry import inject_context
from contentpipe.pipelines.domain.model import (
    PipelineRun,
    PipelineState,
    PostState,
    PostToPlatform,
    RunState,
    RunTrigger,
    Step,
    StepRun,
    StepState,
    TargetResult,
    TriggerKind,
)
from contentpipe.pipelines.service_layer.engine.core import EngineSettings, child_request_id
from contentpipe.pipelines.service_layer.engine.executor import RunExecutor
from contentpipe.pipelines.service_layer.pipelines import MAX_REQUEST_ID
from contentpipe.pipelines.service_layer.ports import (
    LeaseLost,
    Page,
    Peers,
    PipelineRepository,
    RunDispatch,
    RunFilter,
    RunRepository,
)

_log = logging.getLogger(__name__)
CANCEL_WAIT_SECONDS = 10.0
MAX_BATCH_RUNS = 500


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One run to queue, as RunService.run takes it."""

    pipeline_id: str
    request_id: str
    job: str = ""
    nominal_time: datetime | None = None


class RunService:
    def __init__(
        self,
        pipelines: PipelineRepository,
        runs: RunRepository,
        peers: Peers,
        settings: EngineSettings,
        *,
        on_queued: Callable[[], None] = lambda: None,
        dispatch: RunDispatch | None = None,
        changes: ChangeNotifier | None = None,
    ) -> None:
        self._pipelines = pipelines
        self._runs = runs
        # Saves announced here (NotifyingRunRepository) end a WaitPipelineRun in this process at once.
        self._changes = changes if changes is not None else ChangeNotifier()
        self._peers = peers
        self._settings = settings
        self._on_queued = on_queued
        self._dispatch = dispatch

    async def run(
        self, owner: str, pipeline_id: str, request_id: str, job: str = "", nominal_time: datetime | None = None
    ) -> PipelineRun:
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument.single("request_id", f"at most {MAX_REQUEST_ID} characters")
        pipeline = await self._pipelines.get(owner, pipeline_id)
        if pipeline is None or pipeline.state == PipelineState.PAUSED:
            # A retry of a call that queued a run answers with that run, whatever happened to the pipeline since.
            # (On the common path the insert below finds a repeated request id itself: no read first.)
            existing = await self._runs.find_by_request_id(owner, request_id) if request_id else None
            if existing is not None:
                return existing
            if pipeline is None:
                raise NotFound(f"pipelines/{pipeline_id} not found", reason="PIPELINE_NOT_FOUND")
            raise FailedPrecondition(
                f"pipelines/{pipeline_id} is PAUSED; set its state to ACTIVE to run it", reason="PIPELINE_PAUSED"
            )
        now = datetime.now(UTC)
        trigger = RunTrigger(
            kind=TriggerKind.SCHEDULE if job else TriggerKind.MANUAL,
            trigger_time=now,
            job=job,
            nominal_time=nominal_time,
        )
        run = PipelineRun(
            id=new_id(),
            pipeline_id=pipeline.id,
            owner=owner,
            pipeline_revision=pipeline.revision,
            pipeline_display_name=pipeline.display_name,
            state=RunState.QUEUED,
            trigger=trigger,
            definition=pipeline.steps,
            steps=tuple(StepRun(step_id=step.id) for step in pipeline.steps),
            create_time=now,
            request_id=request_id,
            trace_context=inject_context(),
        )
        # Room here to execute it now: inserted leased to this replica and started at once (no wake-up, no claim).
        lease = self._dispatch.reserve(run) if self._dispatch is not None else None
        try:
            stored = await self._runs.add(run, lease)
        except BaseException:
            if lease is not None and self._dispatch is not None:
                self._dispatch.unreserve(run)
            raise
        if stored.id != run.id:  # a repeated request id, answered with its earlier run
            if lease is not None and self._dispatch is not None:
                self._dispatch.unreserve(run)
        elif lease is not None and self._dispatch is not None:
            self._dispatch.start(stored)
        else:
            self._on_queued()
        return stored

    async def run_many(
        self, owner: str, requests: Sequence[RunRequest | ContentpipeError]
    ) -> list[PipelineRun | ContentpipeError]:
        """Queue each run as `run` would, concurrently (their inserts share group commits); one outcome per
        request, in order. A request that could not be read arrives as its error and is answered with it.

        An error the service answers with (not found, paused, invalid, the database unavailable) is that request's
        outcome; anything else (a bug) fails the whole batch, which the caller may send again: the runs that were
        queued are found again by their request ids."""
        if not requests:
            raise InvalidArgument.single("requests", "at least one run to queue")
        if len(requests) > MAX_BATCH_RUNS:
            raise InvalidArgument.single("requests", f"at most {MAX_BATCH_RUNS} runs per call, got {len(requests)}")
        first_index: dict[str, int] = {}
        for index, request in enumerate(requests):
            if isinstance(request, RunRequest) and request.request_id:
                earlier = first_index.setdefault(request.request_id, index)
                if earlier != index:
                    raise InvalidArgument.single(
                        f"requests[{index}].request_id", f"repeats requests[{earlier}].request_id"
                    )

        async def queue(request: RunRequest | ContentpipeError) -> PipelineRun | ContentpipeError:
            if isinstance(request, ContentpipeError):
                return request
            try:
                return await self.run(owner, request.pipeline_id, request.request_id, request.job, request.nominal_time)
            except ContentpipeError as exc:
                return exc

        return list(await asyncio.gather(*(queue(request) for request in requests)))

    async def get(self, owner: str, pipeline_id: str, run_id: str) -> PipelineRun:
        run = await self._runs.get(owner, pipeline_id, run_id)
        if run is None:
            raise NotFound(f"pipelines/{pipeline_id}/runs/{run_id} not found", reason="RUN_NOT_FOUND")
        return run

    async def wait(
        self, owner: str, pipeline_id: str, run_id: str, *, seen: RunState | None, max_wait: float | None
    ) -> PipelineRun:
        """The run once its state is not `seen` (None: once terminal), or as it is after `max_wait` seconds (capped,
        see contentpipe.common.changes)."""

        def done(run: PipelineRun) -> bool:
            return run.state.terminal or (seen is not None and run.state != seen)

        def visible(run: PipelineRun) -> bool:  # what `get` checks of a row
            return run.owner == owner and run.pipeline_id == pipeline_id

        return await wait_for(
            self._changes,
            run_id,
            lambda: self.get(owner, pipeline_id, run_id),
            done,
            wait_seconds(max_wait),
            visible=visible,
        )

    async def list_page(self, where: RunFilter, limit: int, after: dict[str, object] | None) -> Page:
        if where.pipeline_id is not None and await self._pipelines.get(where.owner, where.pipeline_id) is None:
            raise NotFound(f"pipelines/{where.pipeline_id} not found", reason="PIPELINE_NOT_FOUND")
        if where.created_after and where.created_before and where.created_after >= where.created_before:
            raise InvalidArgument.single("create_time_before", "must be later than create_time_after")
        return await self._runs.list_page(where, limit, after)

    async def cancel(self, owner: str, pipeline_id: str, run_id: str) -> PipelineRun:
        run = await self.get(owner, pipeline_id, run_id)
        if run.state.terminal:
            return run
        await self._runs.request_cancel(owner, run_id)
        # Nobody holds it (queued, or its worker died): cancel it here, under a lease of our own.
        lease_owner = f"{self._settings.queue.owner}/cancel-{new_id()[:8]}"
        claimed = await self._runs.claim(lease_owner, 1, self._settings.queue.lease_seconds, run_id=run_id)
        if claimed:
            executor = RunExecutor(
                self._runs, self._peers, replace(self._settings, queue=replace(self._settings.queue, owner=lease_owner))
            )
            try:
                return await executor.cancel(claimed[0])
            except LeaseLost:
                pass
            finally:
                await self._runs.release([run_id], lease_owner)
        # A worker holds it: it sees the request at its next check and cancels the children.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_WAIT_SECONDS
        while loop.time() < deadline:
            current = await self.get(owner, pipeline_id, run_id)
            if current.state.terminal:
                return current
            await asyncio.sleep(0.1)
        return await self.get(owner, pipeline_id, run_id)

    async def cancel_children(self, run: PipelineRun) -> None:
        """Best effort, for runs deleted with their pipeline."""
        executor = RunExecutor(self._runs, self._peers, self._settings)
        for step_run in run.steps:
            if step_run.state == StepState.RUNNING:
                await executor.cancel_children(run.owner, step_run)

    async def resume(
        self, owner: str, pipeline_id: str, run_id: str, request_id: str, *, use_latest_revision: bool = False
    ) -> PipelineRun:
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument.single("request_id", f"at most {MAX_REQUEST_ID} characters")
        if request_id:
            existing = await self._runs.find_by_request_id(owner, request_id)
            if existing is not None:
                return existing
        source = await self.get(owner, pipeline_id, run_id)
        if source.state not in (RunState.FAILED, RunState.CANCELED):
            raise FailedPrecondition(
                f"{source.name} is {source.state.value}; only FAILED or CANCELED runs can be resumed",
                reason="RUN_NOT_RESUMABLE",
            )
        pipeline = await self._pipelines.get(owner, pipeline_id)
        if pipeline is None:
            raise NotFound(f"pipelines/{pipeline_id} not found", reason="PIPELINE_NOT_FOUND")
        if pipeline.state == PipelineState.PAUSED:
            raise FailedPrecondition(
                f"pipelines/{pipeline_id} is PAUSED; set its state to ACTIVE to resume its runs",
                reason="PIPELINE_PAUSED",
            )
        now = datetime.now(UTC)
        if use_latest_revision:
            # The edited pipeline: reuse what succeeded only while nothing up to it changed.
            revision, display_name = pipeline.revision, pipeline.display_name
            definition, steps = pipeline.steps, resumed_steps(source, pipeline.steps)
        else:
            # The revision the failed run used: resuming continues that run, not the edited pipeline.
            revision, display_name = source.pipeline_revision, source.pipeline_display_name
            definition = source.definition
            steps = tuple(_carried_over(source, index, step_run) for index, step_run in enumerate(source.steps))
        run = PipelineRun(
            id=new_id(),
            pipeline_id=source.pipeline_id,
            owner=owner,
            pipeline_revision=revision,
            pipeline_display_name=display_name,
            state=RunState.QUEUED,
            trigger=RunTrigger(
                kind=TriggerKind.RESUME,
                trigger_time=now,
                resumed_run=source.name,
                job=source.trigger.job,
                nominal_time=source.trigger.nominal_time,
            ),
            definition=definition,
            steps=steps,
            create_time=now,
            request_id=request_id,
            trace_context=inject_context(),
        )
        stored = await self._runs.add(run)
        if stored.id == run.id:  # not a repeated request id answered with its earlier run
            self._on_queued()
        return stored


def resumed_steps(source: PipelineRun, definition: tuple[Step, ...]) -> tuple[StepRun, ...]:
    """Step runs for resuming `source` with another `definition` (the pipeline's latest revision).

    A step is carried over (reused if it succeeded, published targets kept if not) while it and every step
    before it are identical in both definitions: outputs of a changed step feed later templates, so from the
    first difference on, steps start again. Published targets of a post step with the same id are kept even
    then, for the connections it still posts to: a resume never publishes the same post twice."""
    old_steps = {step.id: (index, step) for index, step in enumerate(source.definition)}
    carried: list[StepRun] = []
    unchanged_so_far = True
    for index, step in enumerate(definition):
        previous = old_steps.get(step.id)
        step_run = source.steps[previous[0]] if previous is not None else None
        same = previous is not None and previous[0] == index and previous[1] == step
        if unchanged_so_far and same and step_run is not None:
            carried.append(_carried_over(source, index, step_run))
            unchanged_so_far = step_run.state.done
            continue
        unchanged_so_far = False
        carried.append(_restarted(step, step_run, source, previous[0] if previous is not None else -1))
    return tuple(carried)


def _kept_target(source: PipelineRun, index: int, position: int, target: TargetResult) -> TargetResult | None:
    """What a resume keeps of a post target of `source`'s step `index`, None when it starts afresh.

    Kept: a post that went out (PUBLISHED, or UNCONFIRMED for a person), a post still on its way (the resumed run
    waits for it), and the key of a create whose outcome is unknown (its answer was lost: the same key finds that
    post again). Only a post that ended FAILED or CANCELED is made anew, under the resumed run's own key. A post on
    its way keeps its key too: its name is chosen before its create, so it may not exist yet, and the resumed run
    creates it under that key (the posting service answers with the post if it does)."""
    if target.post:
        if target.post_state in (PostState.FAILED, PostState.CANCELED):
            return None
        if target.published or target.post_state == PostState.UNCONFIRMED:
            return replace(target, attempt=0, error=None)
        key = target.request_key or child_request_id(source.id, index, target.attempt, position)
        return replace(target, error=None, request_key=key)
    if target.attempt > 0:
        key = target.request_key or child_request_id(source.id, index, target.attempt, position)
        return TargetResult(connection=target.connection, request_key=key)
    return None


def _restarted(step: Step, step_run: StepRun | None, source: PipelineRun, index: int) -> StepRun:
    """A fresh step run; for a post step with the same id, what went out (or may have) under it stays."""
    if step_run is None or not isinstance(step.action, PostToPlatform):
        return StepRun(step_id=step.id)
    kept: dict[str, TargetResult] = {}
    for position, target in enumerate(step_run.targets):
        carried = _kept_target(source, index, position, target)
        if carried is not None:
            kept[target.connection] = carried
    if not kept:
        return StepRun(step_id=step.id)
    targets = tuple(kept.get(name) or TargetResult(connection=name) for name in step.action.connections)
    return StepRun(step_id=step.id, targets=targets, children=tuple(t.post for t in targets if t.post))


def _carried_over(source: PipelineRun, index: int, step_run: StepRun) -> StepRun:
    """A succeeded step is reused with its outputs; others start again, keeping targets already published."""
    if step_run.state.done:
        return StepRun(
            step_id=step_run.step_id,
            state=StepState.REUSED,
            attempts=0,
            start_time=step_run.start_time,
            finish_time=step_run.finish_time,
            children=step_run.children,
            outputs=step_run.outputs,
            targets=step_run.targets,
        )
    kept: list[TargetResult] = []
    children: list[str] = []
    for position, target in enumerate(step_run.targets):
        carried = _kept_target(source, index, position, target)
        kept.append(carried or TargetResult(connection=target.connection))
        if carried is not None and carried.post:
            children.append(carried.post)
    return StepRun(step_id=step_run.step_id, targets=tuple(kept), children=tuple(children))
