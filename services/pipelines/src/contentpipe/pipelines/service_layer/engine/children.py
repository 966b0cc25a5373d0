"""The children a step attempt creates: their request ids and the names chosen for them before they exist."""

from __future__ import annotations

from dataclasses import replace

from contentpipe.pipelines.domain.model import (
    GenerateContent,
    PipelineRun,
    PostToPlatform,
    StepRun,
    TargetResult,
)
from contentpipe.pipelines.service_layer.engine.core import child_name, child_request_id
from contentpipe.pipelines.service_layer.engine.targets import target_for_attempt


def generation_key(run: PipelineRun, index: int, step_run: StepRun) -> str:
    """The request id of the generation step `index` creates (or created) for its `child_attempt`."""
    return child_request_id(run.id, index, step_run.child_attempt)


def post_key(run: PipelineRun, index: int, position: int, target: TargetResult) -> str:
    """The request id of the post for `target`: a resumed run's target keeps the key of the create it carried over."""
    return target.request_key or child_request_id(run.id, index, target.attempt, position)


def named_by_engine(run: PipelineRun, name: str, key: str) -> bool:
    """Whether `name` is the one the engine chose for `key` (a child recorded before names were chosen up front
    was named by its peer, and exists)."""
    return name == child_name(name.partition("/")[0], run.owner, key)


def name_children(run: PipelineRun, index: int, step_run: StepRun) -> StepRun:
    """`step_run` (an attempt starting) with the names of the children it will create, ready for the write that
    starts the attempt.

    A generate step gets the name of its generation unless it still awaits one (kept across retries until that
    generation itself fails); a post step gets a post name for every target this attempt creates a post for
    (`target_for_attempt`: one whose earlier post is adopted keeps it). Other steps are returned as they are."""
    action = run.definition[index].action
    if isinstance(action, GenerateContent):
        if step_run.current_child:
            return step_run
        # A retry after a failed create (lost reply, UNAVAILABLE) keeps the key: the peer returns the same child.
        named = replace(step_run, child_attempt=step_run.child_attempt or step_run.attempts)
        return named.with_child(child_name("generations", run.owner, generation_key(run, index, named)))
    if isinstance(action, PostToPlatform):
        targets = [
            target_for_attempt(target, step_run.attempts)
            for target in (step_run.targets or tuple(TargetResult(connection=name) for name in action.connections))
        ]
        children = step_run.children
        for position, target in enumerate(targets):
            if target.post:
                continue
            name = child_name("posts", run.owner, post_key(run, index, position, target))
            targets[position] = replace(target, post=name)
            if name not in children:
                children = (*children, name)
        return replace(step_run, targets=tuple(targets), children=children)
    return step_run
