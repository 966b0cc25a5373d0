"""Executes one leased run to a terminal state, saving progress after every change that matters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from contentpipe.common import errors
from contentpipe.common.error_class import ErrorClass
from contentpipe.common.telemetry import extract_context, get_tracer, optional_span, span_link_from, tracing_enabled
from contentpipe.pipelines.domain import retries, templates
from contentpipe.pipelines.domain.model import (
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
from contentpipe.pipelines.service_layer.engine.children import (
    generation_key,
    name_children,
    named_by_engine,
    post_key,
)
from contentpipe.pipelines.service_layer.engine.context import media_items, render_options, template_context
from contentpipe.pipelines.service_layer.engine.core import (
    CancelRequested,
    EngineSettings,
    StepFailed,
    now_utc,
)
from contentpipe.pipelines.service_layer.engine.targets import SEVERITY, target_outcome
from contentpipe.pipelines.service_layer.engine.waits import RunWaits
from contentpipe.pipelines.service_layer.metrics import PipelineMetrics, default_metrics
from contentpipe.pipelines.service_layer.ports import (
    GenerationRequest,
    GenerationStatus,
    JobSpec,
    Peers,
    PostRequest,
    RunRepository,
)

_log = logging.getLogger(__name__)
_tracer = get_tracer(__name__)


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
        # cancel_event is set by the worker's cancel watcher (one query for all runs); without it, ask the repository.
        self._waits = RunWaits(settings, cancel_event, self._cancel_requested)
        self.run: PipelineRun | None = None
        # The run as last written: some changes are kept in `run` only and written with the next save (the
        # state they record is derived again after a crash); metrics compare what was written.
        self._saved: PipelineRun | None = None
        # Children this executor created (or found again): a child named by an earlier executor of the run may
        # not exist yet (it crashed between the write and the create), so that one is created again under its key.
        self._created: set[str] = set()

    # ------------------------------------------------------------ persistence

    async def _save(self, run: PipelineRun) -> PipelineRun:
        await self._runs.save(run, self._settings.queue.owner)
        before, self._saved = self._saved, run
        self.run = run
        self._metrics.transition(before, run)
        return run

    async def _save_step(self, index: int, step_run: StepRun) -> PipelineRun:
        assert self.run is not None
        return await self._save(self.run.with_step(index, step_run))

    async def _start_attempt(self, index: int, step_run: StepRun) -> PipelineRun:
        """Write the start of an attempt together with the names of the children it will create."""
        assert self.run is not None
        return await self._save_step(index, name_children(self.run, index, step_run))

    async def _cancel_requested(self) -> bool:
        assert self.run is not None
        return await self._runs.cancel_requested(self.run.id)

    # ------------------------------------------------------------ run

    async def execute(self, run: PipelineRun) -> PipelineRun:
        self.run = self._saved = run
        carrier = run.trace_context if tracing_enabled() else None
        link = span_link_from(carrier) if carrier else None
        # Parented by the call that queued the run (scheduler pass → RunPipeline), so one scheduled run is one
        # trace across the four services although it executes later, on any worker; the link says so explicitly.
        with optional_span(
            _tracer,
            "pipelines.run",
            context=extract_context(carrier) if carrier else None,
            links=[link] if link else None,
            attributes={"contentpipe.run": run.name, "contentpipe.user": run.owner},
        ):
            try:
                await self._waits.check()
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
                # Every step was done already (a resumed run whose last write missed the run's success).
                final = replace(self.run, state=RunState.SUCCEEDED, finish_time=now_utc(), error=None)
                _log.info("run succeeded", extra={"run": run.name})
                return await self._save(final)
            except CancelRequested:
                assert self.run is not None
                return await self.cancel(self.run)

    async def cancel(self, run: PipelineRun) -> PipelineRun:
        """Cancel in-flight children where possible and mark the run CANCELED (caller holds the lease)."""
        if self._saved is None:
            self._saved = run
        self.run = run
        for index, step_run in enumerate(run.steps):
            if step_run.state == StepState.RUNNING:
                await self._unlist_uncreated(index)
        steps = list(self.run.steps)
        finished = now_utc()
        for index, step_run in enumerate(steps):
            if step_run.state == StepState.RUNNING:
                await self.cancel_children(run.owner, step_run)
                steps[index] = replace(step_run, state=StepState.CANCELED, finish_time=finished, next_attempt_time=None)
            elif step_run.state == StepState.PENDING:
                steps[index] = replace(step_run, state=StepState.CANCELED)
        canceled = replace(self.run, steps=tuple(steps), state=RunState.CANCELED, finish_time=finished)
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

    async def _unlist_uncreated(self, index: int) -> None:
        """Before a step ends for good (failed, cancelled): a child named for it whose create's outcome is unknown
        here (the create failed, or an earlier worker died around it) stays listed only if it exists. Its peer is
        asked, again while it cannot answer, for at most `child_settle` seconds; a child still unknown then stays
        listed (it may exist). Kept in memory: the step's final write carries it."""
        assert self.run is not None
        run = self.run
        step_run = run.steps[index]
        unknown = [
            name
            for name, key in [
                (step_run.current_child, generation_key(run, index, step_run)),
                *(
                    (target.post, post_key(run, index, position, target))
                    for position, target in enumerate(step_run.targets)
                    if not target.post_state.terminal
                ),
            ]
            if name and name not in self._created and named_by_engine(run, name, key)
        ]
        missing = {name for name in unknown if not await self._exists(run.owner, name)}
        if not missing:
            return
        step_run = replace(
            step_run,
            children=tuple(child for child in step_run.children if child not in missing),
            current_child="" if step_run.current_child in missing else step_run.current_child,
            # The target keeps its attempt: a resume creates its post under the same key (and name).
            targets=tuple(replace(t, post="") if t.post in missing else t for t in step_run.targets),
        )
        self.run = run.with_step(index, step_run)

    async def _exists(self, owner: str, name: str) -> bool:
        """Whether the peer has the child `name`; True when it could not tell within `child_settle` seconds."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._settings.child_settle
        delay = self._settings.poll_initial
        while True:
            try:
                if name.startswith("generations/"):
                    await self._peers.generations.get(owner, name)
                else:
                    await self._peers.posts.get(owner, name)
                return True
            except errors.NotFound:
                return False
            except errors.ContentpipeError:
                if loop.time() + delay > give_up:
                    return True
            await asyncio.sleep(delay)
            delay = min(delay * self._settings.poll_multiplier, self._settings.poll_max)

    # ------------------------------------------------------------ steps

    async def _execute_step(self, index: int) -> None:
        assert self.run is not None
        step = self.run.definition[index]
        step_run = self.run.steps[index]
        if step_run.state == StepState.PENDING:
            # Started and its first attempt counted in one write.
            step_run = replace(step_run, state=StepState.RUNNING, start_time=now_utc(), attempts=step_run.attempts or 1)
            await self._start_attempt(index, step_run)
        policy = step.policy()
        with optional_span(_tracer, "pipelines.step", attributes={"contentpipe.step": step.id}):
            while True:
                assert self.run is not None
                step_run = self.run.steps[index]
                if step_run.next_attempt_time is not None:
                    await self._waits.sleep((step_run.next_attempt_time - now_utc()).total_seconds())
                    # current_child stays: only the child's own failure clears it (see _generate).
                    step_run = replace(step_run, attempts=step_run.attempts + 1, next_attempt_time=None)
                    await self._start_attempt(index, step_run)
                elif step_run.attempts == 0:
                    await self._start_attempt(index, replace(step_run, attempts=1))
                try:
                    await self._attempt(index)
                    return
                except StepFailed as failure:
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
        await self._unlist_uncreated(index)
        assert self.run is not None
        current = self.run.steps[index].current_child
        if current.startswith("generations/"):
            # Given up on while its create's outcome or its end is unknown: if it exists, it must not run on (and
            # cost) for a run that failed. It stays listed among the step's children.
            with contextlib.suppress(errors.ContentpipeError):
                await self._peers.generations.cancel(self.run.owner, current)
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
        """Record the step's success in one write together with what follows it: the next step's start, or
        (after the last step) the run's success."""
        assert self.run is not None
        finished = now_utc()
        step_run = replace(
            self.run.steps[index],
            state=StepState.SUCCEEDED,
            outputs=outputs,
            finish_time=finished,
            error=None,
            next_attempt_time=None,
            **changes,
        )
        run = self.run.with_step(index, step_run)
        following = next((i for i in range(index + 1, len(run.steps)) if not run.steps[i].state.done), None)
        if following is None:
            run = replace(run, state=RunState.SUCCEEDED, finish_time=finished, error=None)
            _log.info("run succeeded", extra={"run": run.name})
        elif run.steps[following].state == StepState.PENDING:
            pending = run.steps[following]
            started = replace(pending, state=StepState.RUNNING, start_time=finished, attempts=pending.attempts or 1)
            run = run.with_step(following, name_children(run, following, started))
        await self._save(run)

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
            raise StepFailed(StepError(ErrorClass.PERMANENT, "STEP_EMPTY", "the step has no action"))

    def _render(self, index: int, field: str, source: str) -> str:
        assert self.run is not None
        try:
            return templates.render_text(source, template_context(self.run))
        except templates.TemplateError as exc:
            step_id = self.run.definition[index].id
            raise StepFailed(
                StepError(ErrorClass.PERMANENT, "TEMPLATE_ERROR", f"step {step_id!r}, {field}: {exc}")
            ) from None

    # ------------------------------------------------------------ generate_content

    async def _generate(self, index: int, action: GenerateContent) -> None:
        assert self.run is not None and action.kind is not None
        run = self.run
        step_id = run.definition[index].id
        step_run = run.steps[index]
        if not step_run.current_child:
            # An attempt started without its child's name (a run recorded before names were chosen up front).
            await self._start_attempt(index, step_run)
            run = self.run
            step_run = run.steps[index]
        name = step_run.current_child
        key = generation_key(run, index, step_run)
        if name not in self._created and step_run.child_attempt and named_by_engine(run, name, key):
            prompt = self._render(index, "prompt", action.prompt)
            request = GenerationRequest(
                kind=action.kind, prompt=prompt, options=action.options, provider=action.provider, model=action.model
            )
            # The key and the name survive a failed create (lost reply, UNAVAILABLE, crash): the retry gets the
            # same generation.
            try:
                status = await self._peers.generations.create(run.owner, request, key, name)
            except errors.ContentpipeError as exc:
                raise StepFailed(
                    retries.step_error(exc, f"step {step_id!r}: creating the generation failed"),
                    getattr(exc, "retry_after", None),
                ) from None
            self._created.add(status.name)
            if status.name != name:
                # The key's generation was made before its name was chosen up front: adopt the peer's name (kept in
                # memory; a crash before the next write asks the peer again).
                children = tuple(status.name if child == name else child for child in step_run.children)
                step_run = replace(step_run, children=children, current_child=status.name)
                self.run = run.with_step(index, step_run)
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
            raise StepFailed(
                StepError(ErrorClass.PERMANENT, "GENERATION_CANCELED", f"step {step_id!r}: {status.name} was cancelled")
            )
        error_class = ErrorClass.RETRYABLE if status.error_retryable else ErrorClass.PERMANENT
        raise StepFailed(
            StepError(
                error_class,
                status.error_reason or "GENERATION_FAILED",
                f"step {step_id!r}: {status.name} failed: {status.error_message or 'no details'}",
            )
        )

    async def _await_generation(self, index: int, name: str) -> GenerationStatus:
        assert self.run is not None
        owner = self.run.owner
        loop = asyncio.get_running_loop()
        delay = self._settings.poll_initial
        while True:
            started = loop.time()
            try:
                status = await self._waits.until_cancelled(
                    lambda: self._peers.generations.wait(owner, name, self._waits.child_wait())
                )
                if status.terminal:
                    return status
            except errors.ContentpipeError as exc:
                if not retries.classify(exc).retryable:
                    raise StepFailed(
                        retries.step_error(exc, f"step {self.run.definition[index].id!r}: reading {name} failed")
                    ) from None
            delay = await self._waits.pace(started, delay)

    # ------------------------------------------------------------ post_to_platform

    async def _post(self, index: int, action: PostToPlatform) -> None:
        assert self.run is not None
        step_run = self.run.steps[index]
        named = name_children(self.run, index, step_run)
        if named != step_run:
            # An attempt started without its posts' names (a run recorded before names were chosen up front).
            await self._save_step(index, named)
        run = self.run
        pending = [
            position
            for position, target in enumerate(named.targets)
            if target.post not in self._created
            and not target.post_state.terminal
            and named_by_engine(run, target.post, post_key(run, index, position, target))
        ]
        if pending:
            context = template_context(run)
            caption = self._render(index, "caption", action.caption) if action.caption else ""
            try:
                options = render_options(action.options, context)
            except templates.TemplateError as exc:
                raise StepFailed(
                    StepError(
                        ErrorClass.PERMANENT,
                        "TEMPLATE_ERROR",
                        f"step {run.definition[index].id!r}, options: {exc}",
                    )
                ) from None
            media = media_items(run, index, action)
            for position in pending:
                await self._create_post(
                    index,
                    position,
                    PostRequest(
                        connection=named.targets[position].connection,
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
                (not target.post_state.terminal and target.error is None)
                or (target.post_state == PostState.UNCONFIRMED and target.error is None)
            )
        ]
        await asyncio.gather(*(self._await_post(index, pos) for pos in waiting))
        await self._conclude_post(index)

    async def _update_target(self, index: int, position: int, target: TargetResult, *, save: bool = True) -> None:
        """Change one target; `save=False` keeps the change for the step's next write (a post's outcome: it is
        read again from the posting service after a crash)."""
        async with self._lock:
            assert self.run is not None
            step_run = self.run.steps[index]
            targets = list(step_run.targets)
            named = targets[position].post
            targets[position] = target
            step_run = replace(step_run, targets=tuple(targets))
            if target.post and target.post not in step_run.children:
                # The peer answered with another name than the one chosen (a post made before names were chosen
                # up front): the run lists the post that exists.
                children = tuple(child for child in step_run.children if child != named)
                step_run = replace(step_run, children=(*children, target.post))
            if save:
                await self._save_step(index, step_run)
            else:
                self.run = self.run.with_step(index, step_run)

    async def _create_post(self, index: int, position: int, request: PostRequest) -> None:
        assert self.run is not None
        run = self.run
        target = run.steps[index].targets[position]
        try:
            status = await self._peers.posts.create(
                run.owner, request, post_key(run, index, position, target), target.post
            )
        except errors.ContentpipeError as exc:
            error = retries.step_error(
                exc, f"step {run.definition[index].id!r}, target {target.connection}: creating the post failed"
            )
            # The name stays: whether the post exists is unknown, and a retry creates it under the same key.
            await self._update_target(index, position, replace(target, error=error))
            return
        self._created.add(status.name)
        await self._update_target(
            index, position, replace(target, post=status.name, post_state=status.state), save=False
        )

    async def _await_post(self, index: int, position: int) -> None:
        assert self.run is not None
        owner = self.run.owner
        step_id = self.run.definition[index].id
        target = self.run.steps[index].targets[position]
        loop = asyncio.get_running_loop()
        delay = self._settings.poll_initial
        while True:
            started = loop.time()
            try:
                status = await self._waits.until_cancelled(
                    lambda: self._peers.posts.wait(owner, target.post, self._waits.child_wait())
                )
                if status.state.terminal:
                    break
            except errors.ContentpipeError as exc:
                if not retries.classify(exc).retryable:
                    error = retries.step_error(
                        exc, f"step {step_id!r}, target {target.connection}: reading {target.post} failed"
                    )
                    await self._update_target(index, position, replace(target, error=error), save=False)
                    return
            delay = await self._waits.pace(started, delay)
        await self._update_target(index, position, target_outcome(step_id, target, status), save=False)

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
        worst = min(errors_seen, key=lambda error: SEVERITY.index(error.error_class))
        published = sum(1 for target in targets if target.published)
        message = f"{worst.message} ({published} of {len(targets)} target(s) published)"
        raise StepFailed(replace(worst, message=message))

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
            raise StepFailed(
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
            raise StepFailed(
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
