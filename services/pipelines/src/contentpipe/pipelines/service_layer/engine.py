"""The durable run engine: claims runs with leases and executes their steps, recording every move.

Each run is one asyncio task (hundreds per replica, no thread each). Progress is saved after every
change that matters: before a child is created (the attempt number that its request id derives from)
and as soon as the child's name is known, so a run picked up by another worker after a crash adopts
the child instead of creating a second one. Saves are fenced by the lease: a worker that lost a run
cannot overwrite the new holder's progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from contentpipe.common import errors
from contentpipe.common.telemetry import extract_context, get_tracer, span_link_from
from contentpipe.pipelines.domain import retries, templates
from contentpipe.pipelines.domain.model import (
    ErrorClass,
    GenerateContent,
    PipelineRun,
    PostState,
    PostToPlatform,
    RunState,
    SchedulePipeline,
    StepError,
    StepOutputs,
    StepRun,
    StepState,
    TargetResult,
)
from contentpipe.pipelines.service_layer.metrics import PipelineMetrics, default_metrics
from contentpipe.pipelines.service_layer.ports import (
    GenerationRequest,
    GenerationStatus,
    JobSpec,
    LeaseLost,
    MediaItem,
    Peers,
    PostRequest,
    PostStatus,
    RunRepository,
)

_log = logging.getLogger(__name__)
_tracer = get_tracer(__name__)

POST_ERROR_CLASSES = {
    "RETRYABLE": ErrorClass.RETRYABLE,
    "RATE_LIMITED": ErrorClass.RATE_LIMITED,
    "NEEDS_REAUTH": ErrorClass.NEEDS_REAUTH,
    "REJECTED_BY_PLATFORM": ErrorClass.PERMANENT,
}
# A fixed order of severity: the error that fails a multi-target step is the least recoverable one.
_SEVERITY = [ErrorClass.NEEDS_REAUTH, ErrorClass.PERMANENT, ErrorClass.RATE_LIMITED, ErrorClass.RETRYABLE]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    worker_id: str
    lease_seconds: float = 30.0
    max_in_flight: int = 200
    max_per_user: int = 20
    claim_interval: float = 1.0
    poll_initial: float = 0.5
    poll_max: float = 10.0
    poll_multiplier: float = 1.5
    cancel_check_interval: float = 1.0


class _StepFailed(Exception):
    def __init__(self, error: StepError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


class _CancelRequested(Exception):
    pass


def now_utc() -> datetime:
    return datetime.now(UTC)


def child_request_id(run_id: str, step_index: int, attempt: int, target: int | None = None) -> str:
    """Deterministic per run, step, attempt (and target): a retried call after a crash finds the same child."""
    base = f"run-{run_id}-s{step_index}-a{attempt}"
    return base if target is None else f"{base}-t{target}"


def outputs_context(outputs: StepOutputs | None) -> dict[str, Any]:
    if outputs is None:
        return {}
    return {
        "generation": outputs.generation,
        "assets": [dict(asset) for asset in outputs.assets],
        "text": outputs.text,
        "posts": list(outputs.posts),
        "job": outputs.job,
        "next_run_time": outputs.next_run_time,
    }


def template_context(run: PipelineRun) -> dict[str, Any]:
    trigger = run.trigger
    return {
        "steps": {step_run.step_id: outputs_context(step_run.outputs) for step_run in run.steps if step_run.state.done},
        "run": {
            "id": run.id,
            "name": run.name,
            "trigger_time": trigger.trigger_time,
            "trigger_date": trigger.trigger_time.date().isoformat(),
            "trigger_kind": trigger.kind.value,
            "nominal_time": trigger.nominal_time,
            "job": trigger.job,
        },
        "pipeline": {
            "id": run.pipeline_id,
            "name": f"pipelines/{run.pipeline_id}",
            "display_name": run.pipeline_display_name,
            "revision": run.pipeline_revision,
        },
    }


def _render_options(options: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [walk(item) for item in value]
        if isinstance(value, str):
            return templates.render_text(value, context)
        return value

    rendered: dict[str, Any] = walk(options)
    return rendered


def _media_kind(asset: Mapping[str, Any]) -> str:
    content_type = str(asset.get("content_type", ""))
    if content_type.startswith("image/"):
        return "IMAGE"
    return "VIDEO"


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    try:
        return kind(value or 0)
    except (TypeError, ValueError):
        return kind(0)


class RunExecutor:
    """Executes one leased run to a terminal state (or until its lease is lost)."""

    def __init__(
        self,
        runs: RunRepository,
        peers: Peers,
        settings: EngineSettings,
        cancel_event: asyncio.Event | None = None,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self._runs = runs
        self._peers = peers
        self._settings = settings
        self._metrics = metrics if metrics is not None else default_metrics()
        self._lock = asyncio.Lock()
        # Set by the worker's cancel watcher (one query for all runs); without it, ask the repository.
        self._cancel_event = cancel_event
        self.run: PipelineRun | None = None

    # ------------------------------------------------------------ persistence

    async def _save(self, run: PipelineRun) -> PipelineRun:
        await self._runs.save(run, self._settings.worker_id)
        before, self.run = self.run, run
        self._metrics.transition(before, run)
        return run

    async def _save_step(self, index: int, step_run: StepRun) -> PipelineRun:
        assert self.run is not None
        return await self._save(self.run.with_step(index, step_run))

    async def _check_cancel(self) -> None:
        assert self.run is not None
        if self._cancel_event is not None:
            if self._cancel_event.is_set():
                raise _CancelRequested
        elif await self._runs.cancel_requested(self.run.id):
            raise _CancelRequested

    async def _sleep(self, seconds: float) -> None:
        """Wait, waking at once when the run is cancelled (or checking every few seconds without a watcher)."""
        deadline = asyncio.get_running_loop().time() + max(seconds, 0.0)
        while True:
            await self._check_cancel()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            if self._cancel_event is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cancel_event.wait(), timeout=remaining)
            else:
                await asyncio.sleep(min(remaining, 2.0))

    # ------------------------------------------------------------ run

    async def execute(self, run: PipelineRun) -> PipelineRun:
        self.run = run
        link = span_link_from(run.trace_context) if run.trace_context else None
        # Parented by the call that queued the run (scheduler pass → RunPipeline), so one scheduled run is one
        # trace across the four services although it executes later, on any worker; the link says so explicitly.
        with _tracer.start_as_current_span(
            "pipelines.run",
            context=extract_context(run.trace_context) if run.trace_context else None,
            links=[link] if link else None,
            attributes={"contentpipe.run": run.name, "contentpipe.user": run.owner},
        ):
            try:
                await self._check_cancel()
                if run.state == RunState.QUEUED:
                    # Persisted with the first step's start (one write fewer per run).
                    self.run = replace(run, state=RunState.RUNNING, start_time=run.start_time or now_utc())
                    self._metrics.run_started(run)
                for index in range(len(run.definition)):
                    assert self.run is not None
                    if self.run.steps[index].state.done:
                        continue
                    await self._execute_step(index)
                    if self.run.state.terminal:
                        return self.run
                assert self.run is not None
                final = replace(self.run, state=RunState.SUCCEEDED, finish_time=now_utc(), error=None)
                _log.info("run succeeded", extra={"run": run.name})
                return await self._save(final)
            except _CancelRequested:
                assert self.run is not None
                return await self.cancel(self.run)

    async def cancel(self, run: PipelineRun) -> PipelineRun:
        """Cancel in-flight children where possible and mark the run CANCELED (caller holds the lease)."""
        self.run = run
        steps = list(run.steps)
        finished = now_utc()
        for index, step_run in enumerate(steps):
            if step_run.state == StepState.RUNNING:
                await self.cancel_children(run.owner, step_run)
                steps[index] = replace(step_run, state=StepState.CANCELED, finish_time=finished, next_attempt_time=None)
            elif step_run.state == StepState.PENDING:
                steps[index] = replace(step_run, state=StepState.CANCELED)
        canceled = replace(run, steps=tuple(steps), state=RunState.CANCELED, finish_time=finished)
        _log.info("run canceled", extra={"run": run.name})
        return await self._save(canceled)

    async def cancel_children(self, owner: str, step_run: StepRun) -> None:
        if step_run.current_child.startswith("generations/"):
            with contextlib.suppress(errors.ContentpipeError):
                await self._peers.generations.cancel(owner, step_run.current_child)
        for target in step_run.targets:
            if target.post and not target.post_state.terminal:
                with contextlib.suppress(errors.ContentpipeError):
                    await self._peers.posts.cancel(owner, target.post)

    # ------------------------------------------------------------ steps

    async def _execute_step(self, index: int) -> None:
        assert self.run is not None
        step = self.run.definition[index]
        step_run = self.run.steps[index]
        if step_run.state == StepState.PENDING:
            # Started and its first attempt counted in one write.
            step_run = replace(step_run, state=StepState.RUNNING, start_time=now_utc(), attempts=step_run.attempts or 1)
            await self._save_step(index, step_run)
        policy = step.policy()
        with _tracer.start_as_current_span("pipelines.step", attributes={"contentpipe.step": step.id}):
            while True:
                assert self.run is not None
                step_run = self.run.steps[index]
                if step_run.next_attempt_time is not None:
                    await self._sleep((step_run.next_attempt_time - now_utc()).total_seconds())
                    # current_child stays: only the child's own failure clears it (see _generate).
                    step_run = replace(step_run, attempts=step_run.attempts + 1, next_attempt_time=None)
                    await self._save_step(index, step_run)
                elif step_run.attempts == 0:
                    await self._save_step(index, replace(step_run, attempts=1))
                try:
                    await self._attempt(index)
                    return
                except _StepFailed as failure:
                    assert self.run is not None
                    step_run = self.run.steps[index]
                    error = failure.error
                    if error.error_class.retryable and step_run.attempts < (policy.max_attempts or 1):
                        delay = retries.backoff_seconds(policy, step_run.attempts)
                        if failure.retry_after:
                            delay = max(delay, failure.retry_after)
                        _log.info(
                            "step attempt failed; retrying",
                            extra={
                                "run": self.run.name,
                                "step": step.id,
                                "attempt": step_run.attempts,
                                "reason": error.reason,
                                "retry_in_s": round(delay, 3),
                            },
                        )
                        next_time = now_utc() + timedelta(seconds=delay)
                        await self._save_step(index, replace(step_run, error=error, next_attempt_time=next_time))
                        continue
                    await self._fail(index, error)
                    return

    async def _fail(self, index: int, error: StepError) -> None:
        assert self.run is not None
        finished = now_utc()
        step_run = replace(
            self.run.steps[index], state=StepState.FAILED, error=error, finish_time=finished, next_attempt_time=None
        )
        run = self.run.with_step(index, step_run)
        _log.info(
            "run failed",
            extra={
                "run": run.name,
                "step": step_run.step_id,
                "reason": error.reason,
                "error_class": error.error_class.value,
            },
        )
        await self._save(replace(run, state=RunState.FAILED, error=error, finish_time=finished))

    async def _succeed(self, index: int, outputs: StepOutputs, **changes: Any) -> None:
        assert self.run is not None
        step_run = replace(
            self.run.steps[index],
            state=StepState.SUCCEEDED,
            outputs=outputs,
            finish_time=now_utc(),
            error=None,
            next_attempt_time=None,
            **changes,
        )
        await self._save_step(index, step_run)

    async def _attempt(self, index: int) -> None:
        assert self.run is not None
        action = self.run.definition[index].action
        if isinstance(action, GenerateContent):
            await self._generate(index, action)
        elif isinstance(action, PostToPlatform):
            await self._post(index, action)
        elif isinstance(action, SchedulePipeline):
            await self._schedule(index, action)
        else:
            raise _StepFailed(StepError(ErrorClass.PERMANENT, "STEP_EMPTY", "the step has no action"))

    def _render(self, index: int, field: str, source: str) -> str:
        assert self.run is not None
        try:
            return templates.render_text(source, template_context(self.run))
        except templates.TemplateError as exc:
            step_id = self.run.definition[index].id
            raise _StepFailed(
                StepError(ErrorClass.PERMANENT, "TEMPLATE_ERROR", f"step {step_id!r}, {field}: {exc}")
            ) from None

    # ------------------------------------------------------------ generate_content

    async def _generate(self, index: int, action: GenerateContent) -> None:
        assert self.run is not None and action.kind is not None
        run = self.run
        step_id = run.definition[index].id
        step_run = run.steps[index]
        if not step_run.current_child:
            prompt = self._render(index, "prompt", action.prompt)
            request = GenerationRequest(
                kind=action.kind, prompt=prompt, options=action.options, provider=action.provider, model=action.model
            )
            # The key survives a failed create (lost reply, UNAVAILABLE, crash): the retry gets the same generation.
            key_attempt = step_run.child_attempt or step_run.attempts
            if step_run.child_attempt != key_attempt:
                step_run = replace(step_run, child_attempt=key_attempt)
                await self._save_step(index, step_run)
            try:
                status = await self._peers.generations.create(
                    run.owner, request, child_request_id(run.id, index, key_attempt)
                )
            except errors.ContentpipeError as exc:
                raise _StepFailed(
                    retries.step_error(exc, f"step {step_id!r}: creating the generation failed"),
                    getattr(exc, "retry_after", None),
                ) from None
            step_run = step_run.with_child(status.name)
            await self._save_step(index, step_run)
        status = await self._await_generation(index, step_run.current_child)
        if status.state == "SUCCEEDED":
            await self._succeed(
                index,
                StepOutputs(generation=status.name, assets=status.assets, text=status.text),
                current_child="",
                child_attempt=0,
            )
            return
        # The generation itself ended badly: a retry (if any) creates a new one under its own attempt's key.
        assert self.run is not None
        self.run = self.run.with_step(index, replace(self.run.steps[index], current_child="", child_attempt=0))
        if status.state == "CANCELED":
            raise _StepFailed(
                StepError(ErrorClass.PERMANENT, "GENERATION_CANCELED", f"step {step_id!r}: {status.name} was cancelled")
            )
        error_class = ErrorClass.RETRYABLE if status.error_retryable else ErrorClass.PERMANENT
        raise _StepFailed(
            StepError(
                error_class,
                status.error_reason or "GENERATION_FAILED",
                f"step {step_id!r}: {status.name} failed: {status.error_message or 'no details'}",
            )
        )

    async def _await_generation(self, index: int, name: str) -> GenerationStatus:
        assert self.run is not None
        owner = self.run.owner
        delay = self._settings.poll_initial
        while True:
            try:
                status = await self._peers.generations.get(owner, name)
                if status.terminal:
                    return status
            except errors.ContentpipeError as exc:
                if not retries.classify(exc).retryable:
                    raise _StepFailed(
                        retries.step_error(exc, f"step {self.run.definition[index].id!r}: reading {name} failed")
                    ) from None
            await self._sleep(delay)
            delay = min(delay * self._settings.poll_multiplier, self._settings.poll_max)

    # ------------------------------------------------------------ post_to_platform

    def _media(self, index: int, action: PostToPlatform) -> tuple[MediaItem, ...]:
        assert self.run is not None
        if not action.media_step_id:
            return ()
        step_id = self.run.definition[index].id
        source = next((s for s in self.run.steps if s.step_id == action.media_step_id), None)
        assets = source.outputs.assets if source is not None and source.outputs is not None else ()
        indexes = list(action.media_indexes) or list(range(len(assets)))
        media: list[MediaItem] = []
        for position in indexes:
            if position >= len(assets):
                raise _StepFailed(
                    StepError(
                        ErrorClass.PERMANENT,
                        "MEDIA_INDEX_OUT_OF_RANGE",
                        f"step {step_id!r}: step {action.media_step_id!r} produced {len(assets)} asset(s); "
                        f"index {position} does not exist",
                    )
                )
            asset = assets[position]
            media.append(
                MediaItem(
                    uri=str(asset.get("uri", "")),
                    kind=_media_kind(asset),
                    content_type=str(asset.get("content_type", "")),
                    size_bytes=_number(asset.get("size_bytes"), int),
                    duration_seconds=_number(asset.get("duration_seconds"), float),
                    width=_number(asset.get("width"), int),
                    height=_number(asset.get("height"), int),
                    sha256=str(asset.get("sha256", "")),
                )
            )
        if not media:
            raise _StepFailed(
                StepError(
                    ErrorClass.PERMANENT,
                    "NO_MEDIA",
                    f"step {step_id!r}: step {action.media_step_id!r} produced no assets to attach",
                )
            )
        return tuple(media)

    async def _post(self, index: int, action: PostToPlatform) -> None:
        assert self.run is not None
        step_run = self.run.steps[index]
        attempt = step_run.attempts
        targets = list(step_run.targets) or [TargetResult(connection=name) for name in action.connections]
        for position, target in enumerate(targets):
            targets[position] = _target_for_attempt(target, attempt)
        if tuple(targets) != step_run.targets:
            # Not written yet: the same reset is derived again after a crash; the first post created saves it.
            step_run = replace(step_run, targets=tuple(targets))
            self.run = self.run.with_step(index, step_run)
        pending = [pos for pos, target in enumerate(targets) if not target.post and target.error is None]
        if pending:
            context = template_context(self.run)
            caption = self._render(index, "caption", action.caption) if action.caption else ""
            try:
                options = _render_options(action.options, context)
            except templates.TemplateError as exc:
                raise _StepFailed(
                    StepError(
                        ErrorClass.PERMANENT,
                        "TEMPLATE_ERROR",
                        f"step {self.run.definition[index].id!r}, options: {exc}",
                    )
                ) from None
            media = self._media(index, action)
            for position in pending:
                await self._create_post(
                    index,
                    position,
                    PostRequest(
                        connection=targets[position].connection,
                        text=caption,
                        media=media,
                        options=options,
                    ),
                )
        assert self.run is not None
        waiting = [
            pos
            for pos, target in enumerate(self.run.steps[index].targets)
            if target.post
            and (
                not target.post_state.terminal or (target.post_state == PostState.UNCONFIRMED and target.error is None)
            )
        ]
        await asyncio.gather(*(self._await_post(index, pos) for pos in waiting))
        await self._conclude_post(index)

    async def _update_target(self, index: int, position: int, target: TargetResult, child: str = "") -> None:
        async with self._lock:
            assert self.run is not None
            step_run = self.run.steps[index]
            targets = list(step_run.targets)
            targets[position] = target
            step_run = replace(step_run, targets=tuple(targets))
            if child and child not in step_run.children:
                step_run = replace(step_run, children=(*step_run.children, child))
            await self._save_step(index, step_run)

    async def _create_post(self, index: int, position: int, request: PostRequest) -> None:
        assert self.run is not None
        run = self.run
        step_run = run.steps[index]
        target = step_run.targets[position]
        try:
            status = await self._peers.posts.create(
                run.owner, request, child_request_id(run.id, index, target.attempt, position)
            )
        except errors.ContentpipeError as exc:
            error = retries.step_error(
                exc, f"step {run.definition[index].id!r}, target {target.connection}: creating the post failed"
            )
            await self._update_target(index, position, replace(target, error=error))
            return
        await self._update_target(
            index,
            position,
            replace(target, post=status.name, post_state=status.state),
            child=status.name,
        )

    async def _await_post(self, index: int, position: int) -> None:
        assert self.run is not None
        owner = self.run.owner
        step_id = self.run.definition[index].id
        target = self.run.steps[index].targets[position]
        delay = self._settings.poll_initial
        while True:
            try:
                status = await self._peers.posts.get(owner, target.post)
                if status.state.terminal:
                    break
            except errors.ContentpipeError as exc:
                if not retries.classify(exc).retryable:
                    error = retries.step_error(
                        exc, f"step {step_id!r}, target {target.connection}: reading {target.post} failed"
                    )
                    await self._update_target(index, position, replace(target, error=error))
                    return
            await self._sleep(delay)
            delay = min(delay * self._settings.poll_multiplier, self._settings.poll_max)
        await self._update_target(index, position, self._target_outcome(step_id, target, status))

    @staticmethod
    def _target_outcome(step_id: str, target: TargetResult, status: PostStatus) -> TargetResult:
        where = f"step {step_id!r}, target {target.connection}"
        if status.state == PostState.PUBLISHED:
            return replace(target, post_state=status.state, permalink=status.permalink, error=None)
        if status.state == PostState.UNCONFIRMED:
            error = StepError(
                ErrorClass.PERMANENT,
                "POST_UNCONFIRMED",
                f"{where}: whether {status.name} went out is unknown; check the platform and resolve it with "
                "ResolvePost, then resume the run",
            )
        elif status.state == PostState.CANCELED:
            error = StepError(ErrorClass.PERMANENT, "POST_CANCELED", f"{where}: {status.name} was cancelled")
        else:
            error_class = POST_ERROR_CLASSES.get(status.error_class, ErrorClass.PERMANENT)
            hint = " Connect the account again, then resume the run." if error_class == ErrorClass.NEEDS_REAUTH else ""
            error = StepError(
                error_class,
                status.error_reason or "POST_FAILED",
                f"{where}: {status.name} failed: {status.error_message or 'no details'}.{hint}",
            )
        return replace(target, post_state=status.state, error=error)

    async def _conclude_post(self, index: int) -> None:
        assert self.run is not None
        step_run = self.run.steps[index]
        targets = step_run.targets
        if all(target.published for target in targets):
            await self._succeed(index, StepOutputs(posts=tuple(target.post for target in targets)))
            return
        errors_seen = [target.error for target in targets if target.error is not None]
        if not errors_seen:
            errors_seen = [StepError(ErrorClass.RETRYABLE, "POST_NOT_FINISHED", "a post did not finish")]
        worst = min(errors_seen, key=lambda error: _SEVERITY.index(error.error_class))
        published = sum(1 for target in targets if target.published)
        message = f"{worst.message} ({published} of {len(targets)} target(s) published)"
        raise _StepFailed(replace(worst, message=message))

    # ------------------------------------------------------------ schedule_pipeline

    async def _schedule(self, index: int, action: SchedulePipeline) -> None:
        assert self.run is not None
        run = self.run
        step_id = run.definition[index].id
        step_run = run.steps[index]
        run_time = action.run_time
        if action.delay_seconds is not None:
            if step_run.planned_run_time is None:
                step_run = replace(step_run, planned_run_time=now_utc() + timedelta(seconds=action.delay_seconds))
                await self._save_step(index, step_run)
            run_time = step_run.planned_run_time
        elif run_time is not None and run_time <= now_utc():
            raise _StepFailed(
                StepError(
                    ErrorClass.PERMANENT,
                    "RUN_TIME_IN_PAST",
                    f"step {step_id!r}: run_time {templates.format_value(run_time)} has passed; set a later time",
                )
            )
        spec = JobSpec(
            job_id=f"pipeline-{run.pipeline_id}",
            pipeline=f"pipelines/{run.pipeline_id}",
            display_name=run.pipeline_display_name[:200],
            cron_expression=action.cron_expression,
            time_zone=action.time_zone,
            run_time=run_time,
        )
        try:
            job = await self._peers.jobs.upsert(run.owner, spec)
        except errors.ContentpipeError as exc:
            raise _StepFailed(
                retries.step_error(exc, f"step {step_id!r}: updating the schedule failed"),
                getattr(exc, "retry_after", None),
            ) from None
        step_run = step_run.with_child(job.name)
        await self._succeed(
            index,
            StepOutputs(job=job.name, next_run_time=job.next_fire_time),
            children=step_run.children,
            current_child="",
        )


def _target_for_attempt(target: TargetResult, attempt: int) -> TargetResult:
    """What step attempt `attempt` does with a target: adopt its post, create it again under the same key, or
    (only after the post itself failed retryably) create a new post under this attempt's key.

    "Never publish twice": a post created by an earlier attempt (even one whose reply was lost, whose key is still
    recorded) is found again through the same request id rather than created anew.
    """
    if not target.post:
        # Never created, or its create failed with no name known (lost reply, UNAVAILABLE, crash): same key.
        return replace(target, error=None, attempt=target.attempt or attempt)
    if target.post_state in (PostState.FAILED, PostState.CANCELED):
        if target.error is None or target.error.error_class.retryable:
            return TargetResult(connection=target.connection, attempt=attempt)
        return target
    if target.post_state.terminal:
        return target  # PUBLISHED, or UNCONFIRMED for a person to resolve
    return replace(target, error=None)  # still in flight (or reading it failed): poll it


class Worker:
    """Claims runs and executes them concurrently, within per-replica and per-user limits."""

    def __init__(
        self, runs: RunRepository, peers: Peers, settings: EngineSettings, metrics: PipelineMetrics | None = None
    ) -> None:
        self._runs = runs
        self._peers = peers
        self._settings = settings
        self._metrics = metrics if metrics is not None else default_metrics()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._owners: dict[str, str] = {}
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def wake(self) -> None:
        """A run was queued: claim now rather than at the next interval."""
        self._wake.set()

    async def run_forever(self) -> None:
        renewer = asyncio.create_task(self._renew_forever(), name="lease-renewer")
        try:
            while True:
                try:
                    await self.claim_once()
                except Exception:
                    _log.exception("claiming runs failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._settings.claim_interval)
                self._wake.clear()
        finally:
            renewer.cancel()
            await self._stop_tasks()

    async def drain(self) -> int:
        """Execute every claimable run to the end, then return how many were executed (batch mode)."""
        renewer = asyncio.create_task(self._renew_forever(), name="lease-renewer")
        executed = 0
        try:
            while True:
                claimed = await self.claim_once()
                executed += claimed
                if not self._tasks and not claimed:
                    return executed
                if self._tasks:
                    await asyncio.wait(
                        list(self._tasks.values()),
                        timeout=self._settings.claim_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
        finally:
            renewer.cancel()
            await self._stop_tasks()

    async def claim_once(self) -> int:
        capacity = self._settings.max_in_flight - len(self._tasks)
        if capacity <= 0:
            return 0
        counts = Counter(self._owners.values())
        saturated = [owner for owner, count in counts.items() if count >= self._settings.max_per_user]
        claimed = await self._runs.claim(
            self._settings.worker_id,
            capacity,
            self._settings.lease_seconds,
            exclude_owners=saturated,
            # A run whose lease lapsed while its task is still here is not started twice in this process.
            exclude_ids=list(self._tasks),
        )
        surplus: list[str] = []
        started = 0
        for run in claimed:
            if counts[run.owner] >= self._settings.max_per_user:
                surplus.append(run.id)
                continue
            counts[run.owner] += 1
            self._start(run)
            started += 1
        if surplus:
            await self._runs.release(surplus, self._settings.worker_id)
        return started

    def _start(self, run: PipelineRun) -> None:
        self._owners[run.id] = run.owner
        self._cancel_events[run.id] = asyncio.Event()
        task = asyncio.create_task(self._execute(run), name=f"run-{run.id}")
        self._tasks[run.id] = task

    async def _execute(self, run: PipelineRun) -> None:
        executor = RunExecutor(
            self._runs, self._peers, self._settings, self._cancel_events[run.id], metrics=self._metrics
        )
        try:
            await executor.execute(run)
        except LeaseLost:
            _log.warning("lease lost; another worker continues the run", extra={"run": run.name})
        except errors.Unavailable:
            # Our own database hiccuped: the run is not at fault. Give it back; it continues from its last
            # recorded step at the next claim.
            _log.warning("database unavailable; the run will be picked up again", extra={"run": run.name})
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("run crashed in the engine", extra={"run": run.name})
            current = executor.run or run
            error = StepError(
                ErrorClass.PERMANENT,
                "ENGINE_ERROR",
                "the pipelines engine hit an internal error; resume the run to try again",
            )
            with contextlib.suppress(Exception):
                crashed = replace(current, state=RunState.FAILED, error=error, finish_time=now_utc())
                await self._runs.save(crashed, self._settings.worker_id)
                self._metrics.transition(current, crashed)
        finally:
            if self._tasks.get(run.id) is asyncio.current_task():
                self._tasks.pop(run.id, None)
                self._owners.pop(run.id, None)
                self._cancel_events.pop(run.id, None)
                with contextlib.suppress(Exception):
                    await self._runs.release([run.id], self._settings.worker_id)

    async def _renew_forever(self) -> None:
        """Renew leases every third of their length, and look for cancel requests of all runs in one query."""
        interval = max(self._settings.lease_seconds / 3, 0.05)
        loop = asyncio.get_running_loop()
        next_renewal = loop.time() + interval
        while True:
            await asyncio.sleep(min(self._settings.cancel_check_interval, interval))
            ids = list(self._tasks)
            if not ids:
                continue
            try:
                for run_id in await self._runs.cancel_requested_among(ids):
                    event = self._cancel_events.get(run_id)
                    if event is not None:
                        event.set()
            except Exception:
                _log.exception("looking for cancel requests failed; retrying")
            if loop.time() < next_renewal:
                continue
            next_renewal = loop.time() + interval
            try:
                held = await self._runs.renew(ids, self._settings.worker_id, self._settings.lease_seconds)
            except Exception:
                _log.exception("renewing leases failed; retrying")
                continue
            for run_id in ids:
                task = self._tasks.get(run_id)
                if run_id not in held and task is not None and not task.done():
                    _log.warning("lease lost; stopping the run here", extra={"run_id": run_id})
                    task.cancel()

    async def _stop_tasks(self) -> None:
        tasks = list(self._tasks.values())
        ids = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._runs.release(ids, self._settings.worker_id)
