"""Static rules of a pipeline definition; each problem is a field violation naming the step and field."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from contentpipe.common.cron import cron_violations
from contentpipe.common.errors import FieldViolation
from contentpipe.pipelines.domain import templates
from contentpipe.pipelines.domain.model import (
    GenerateContent,
    GenerationKind,
    PostToPlatform,
    RetryPolicy,
    SchedulePipeline,
    Step,
)

STEP_ID = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
CONNECTION_NAME = re.compile(r"^connections/[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
MAX_STEPS = 50
MAX_TARGETS = 20
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 2000
MAX_BACKOFF_SECONDS = 3600.0
MIN_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 366 * 86400.0


def step_path(index: int, step: Step, *fields: str) -> str:
    base = f"pipeline.steps[{index}]"
    kind = step.kind
    suffix = "".join(f".{f}" if not f.startswith("[") else f for f in fields)
    return f"{base}.{kind}{suffix}" if kind else f"{base}{suffix}"


def validate_header(display_name: str, description: str) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not display_name.strip():
        violations.append(FieldViolation("pipeline.display_name", "required"))
    elif len(display_name) > MAX_DISPLAY_NAME:
        violations.append(FieldViolation("pipeline.display_name", f"at most {MAX_DISPLAY_NAME} characters"))
    if len(description) > MAX_DESCRIPTION:
        violations.append(FieldViolation("pipeline.description", f"at most {MAX_DESCRIPTION} characters"))
    return violations


def validate_steps(steps: tuple[Step, ...]) -> list[FieldViolation]:
    """Everything that can be checked without asking another service."""
    violations: list[FieldViolation] = []
    if not steps:
        return [FieldViolation("pipeline.steps", "at least one step is required")]
    if len(steps) > MAX_STEPS:
        violations.append(FieldViolation("pipeline.steps", f"at most {MAX_STEPS} steps"))
    seen: dict[str, int] = {}
    all_ids = [step.id for step in steps]
    earlier: dict[str, templates.StepInfo] = {}
    generation_kinds: dict[str, GenerationKind | None] = {}
    for index, step in enumerate(steps):
        id_path = f"pipeline.steps[{index}].id"
        if not STEP_ID.match(step.id):
            violations.append(
                FieldViolation(
                    id_path,
                    "1 to 63 lower-case letters, digits, '_' or '-', starting with a letter",
                )
            )
        elif step.id in seen:
            violations.append(FieldViolation(id_path, f"duplicate step id {step.id!r} (also steps[{seen[step.id]}])"))
        else:
            seen[step.id] = index
        if step.retry_policy is not None:
            violations.extend(_retry_policy(f"pipeline.steps[{index}].retry_policy", step.retry_policy))
        later = all_ids[index + 1 :]
        action = step.action
        if action is None:
            violations.append(
                FieldViolation(
                    f"pipeline.steps[{index}]",
                    "one of generate_content, post_to_platform or schedule_pipeline is required",
                )
            )
        elif isinstance(action, GenerateContent):
            violations.extend(_generate(index, step, action, earlier, later))
            generation_kinds[step.id] = action.kind
        elif isinstance(action, PostToPlatform):
            violations.extend(_post(index, step, action, earlier, later, generation_kinds))
        else:
            violations.extend(_schedule(index, step, action))
        if step.id and step.id not in earlier and action is not None:
            generation_kind = action.kind.value if isinstance(action, GenerateContent) and action.kind else ""
            earlier[step.id] = templates.StepInfo(kind=step.kind, generation_kind=generation_kind)
    return violations


def _retry_policy(path: str, policy: RetryPolicy) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not 0 <= policy.max_attempts <= 10:
        violations.append(FieldViolation(f"{path}.max_attempts", "1 to 10 (0: the default, 3)"))
    for name, value in (("initial_backoff", policy.initial_backoff), ("max_backoff", policy.max_backoff)):
        if value is not None and not 0 <= value <= MAX_BACKOFF_SECONDS:
            violations.append(FieldViolation(f"{path}.{name}", "0 s to 1 h"))
    if policy.multiplier != 0 and not 1.0 <= policy.multiplier <= 10.0:
        violations.append(FieldViolation(f"{path}.backoff_multiplier", "1.0 to 10.0 (0: the default, 2.0)"))
    return violations


def _template(
    path: str, source: str, earlier: Mapping[str, templates.StepInfo], later: list[str]
) -> list[FieldViolation]:
    try:
        parsed = templates.parse(source)
    except templates.TemplateError as exc:
        return [FieldViolation(path, f"template error at {exc.line}:{exc.column}: {exc.description}")]
    return [
        FieldViolation(path, f"template error at {problem.line}:{problem.column}: {problem.description}")
        for problem in templates.check_references(parsed, earlier, later_steps=later)
    ]


def _generate(
    index: int, step: Step, action: GenerateContent, earlier: Mapping[str, templates.StepInfo], later: list[str]
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if action.kind is None:
        violations.append(FieldViolation(step_path(index, step, "kind"), "required: VIDEO, IMAGE or TEXT"))
    if not action.prompt.strip():
        violations.append(FieldViolation(step_path(index, step, "prompt"), "required"))
    else:
        violations.extend(_template(step_path(index, step, "prompt"), action.prompt, earlier, later))
    return violations


def _post(  # noqa: PLR0917
    index: int,
    step: Step,
    action: PostToPlatform,
    earlier: Mapping[str, templates.StepInfo],
    later: list[str],
    generation_kinds: Mapping[str, GenerationKind | None],
) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    if not action.connections:
        violations.append(FieldViolation(step_path(index, step, "connections"), "at least one connection is required"))
    elif len(action.connections) > MAX_TARGETS:
        violations.append(FieldViolation(step_path(index, step, "connections"), f"at most {MAX_TARGETS} connections"))
    seen: set[str] = set()
    for position, connection in enumerate(action.connections):
        path = step_path(index, step, "connections", f"[{position}]")
        if not CONNECTION_NAME.match(connection):
            violations.append(FieldViolation(path, f"expected connections/{{connection_id}}, got {connection!r}"))
        elif connection in seen:
            violations.append(FieldViolation(path, f"{connection} is listed twice"))
        seen.add(connection)
    if action.caption:
        violations.extend(_template(step_path(index, step, "caption"), action.caption, earlier, later))
    if action.media_step_id:
        path = step_path(index, step, "media_step_id")
        if action.media_step_id in later:
            violations.append(FieldViolation(path, f"step {action.media_step_id!r} runs after this one"))
        elif action.media_step_id not in earlier:
            violations.append(FieldViolation(path, f"no earlier step with id {action.media_step_id!r}"))
        elif earlier[action.media_step_id].kind != "generate_content":
            violations.append(FieldViolation(path, f"step {action.media_step_id!r} is not a generate_content step"))
        elif generation_kinds.get(action.media_step_id) == GenerationKind.TEXT:
            violations.append(FieldViolation(path, f"step {action.media_step_id!r} generates text, which has no media"))
    elif action.media_indexes:
        violations.append(FieldViolation(step_path(index, step, "media_indexes"), "needs media_step_id"))
    for position, media_index in enumerate(action.media_indexes):
        if media_index < 0:
            path = step_path(index, step, "media_indexes", f"[{position}]")
            violations.append(FieldViolation(path, "must not be negative"))
    for option_path, value in _strings(action.options):
        violations.extend(_template(step_path(index, step, "options", option_path), value, earlier, later))
    return violations


def _strings(value: object, prefix: str = "") -> Iterable[tuple[str, str]]:
    """Every string in a JSON-like mapping, with its dotted path (platform options are templates)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for position, item in enumerate(value):
            yield from _strings(item, f"{prefix}[{position}]")
    elif isinstance(value, str):
        yield prefix, value


def _schedule(index: int, step: Step, action: SchedulePipeline) -> list[FieldViolation]:
    chosen = [
        name
        for name, value in (
            ("cron", action.cron_expression),
            ("run_time", action.run_time),
            ("delay", action.delay_seconds),
        )
        if value is not None
    ]
    if len(chosen) != 1:
        return [FieldViolation(step_path(index, step), "exactly one of cron, run_time or delay is required")]
    if action.cron_expression is not None:
        return cron_violations(step_path(index, step, "cron"), action.cron_expression, action.time_zone)
    if action.delay_seconds is not None and not MIN_DELAY_SECONDS <= action.delay_seconds <= MAX_DELAY_SECONDS:
        return [FieldViolation(step_path(index, step, "delay"), "1 s to 366 days")]
    return []
